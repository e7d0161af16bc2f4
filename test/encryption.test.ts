import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Payload } from '@temporalio/common';
import { audit, connect, payloadValue, startRun } from '../src/client';
import { EncryptionCodec, ENCODING, KEY_ENV, keyId, METADATA_KEY_ID, OLD_KEYS_ENV, parseKey } from '../src/temporal/codec';
import { dataConverter } from '../src/temporal/dataConverter';
import type { RunInput, RunResult } from '../src/schemas/run';
import { startFakeModel, type FakeModel } from './support/fakeModel';
import { filesContaining, jsonContains, rawHistories } from './support/history';
import { temporal, tempDir, inProcessWorker } from './support/stack';
import { makeWorld, writeConfig, writeJsonl } from './support/world';

const utf8 = (s: string) => new Uint8Array(Buffer.from(s));
const jsonPayload = (v: unknown): Payload => ({ metadata: { encoding: utf8('json/plain') }, data: utf8(JSON.stringify(v)) });

describe('the AES-256-GCM payload codec', () => {
  const key = randomBytes(32);
  const value = { question: 'What is the secret of the soil?', n: 42 };

  it('round-trips payloads, with metadata naming the cipher and the key id, and a fresh IV each time', async () => {
    const codec = new EncryptionCodec(key);
    const [a, b] = await codec.encode([jsonPayload(value), jsonPayload(value)]);
    expect(Buffer.from(a.metadata!.encoding!).toString()).toBe(ENCODING);
    expect(Buffer.from(a.metadata![METADATA_KEY_ID]!).toString()).toBe(keyId(key));
    expect(Buffer.from(a.data!).toString('latin1')).not.toContain('secret');
    expect(Buffer.from(a.data!).equals(Buffer.from(b.data!))).toBe(false);
    const [back] = await codec.decode([a]);
    expect(Buffer.from(back.metadata!.encoding!).toString()).toBe('json/plain');
    expect(JSON.parse(Buffer.from(back.data!).toString())).toEqual(value);
    // Plain payloads (runs from before encryption was switched on) pass through decode.
    const plain = jsonPayload(value);
    expect(await codec.decode([plain])).toEqual([plain]);
    expect(await codec.encode([])).toEqual([]);
  });

  it('refuses a tampered ciphertext, IV or tag', async () => {
    const codec = new EncryptionCodec(key);
    const [enc] = await codec.encode([jsonPayload(value)]);
    for (const at of [0, 20, enc.data!.length - 1]) {
      const data = Uint8Array.from(enc.data!);
      data[at] ^= 0x01;
      await expect(codec.decode([{ ...enc, data }])).rejects.toThrow(/failed authentication/);
    }
    await expect(codec.decode([{ ...enc, data: enc.data!.subarray(0, 10) }])).rejects.toThrow(/too short/);
  });

  it('refuses a wrong key, and decrypts with a rotated-out key listed as old', async () => {
    const old = new EncryptionCodec(key);
    const [enc] = await old.encode([jsonPayload(value)]);
    const other = randomBytes(32);
    // A different key has a different id: the error says which key is missing and where to put it.
    await expect(new EncryptionCodec(other).decode([enc])).rejects.toThrow(new RegExp(`key id ${keyId(key)}.*${KEY_ENV}.*${OLD_KEYS_ENV}`));
    // A forged key id (right id, wrong key) fails authentication.
    const forged = { ...enc, metadata: { ...enc.metadata, [METADATA_KEY_ID]: utf8(keyId(other)) } };
    await expect(new EncryptionCodec(other).decode([forged])).rejects.toThrow(/failed authentication/);
    // Rotation: new key encrypts, the old one still decrypts older payloads.
    const rotated = EncryptionCodec.fromEnv({ [KEY_ENV]: other.toString('hex'), [OLD_KEYS_ENV]: ` ${key.toString('base64')} ` })!;
    expect(rotated.keyId).toBe(keyId(other));
    const [back] = await rotated.decode([enc]);
    expect(JSON.parse(Buffer.from(back.data!).toString())).toEqual(value);
  });

  it('reads the key as hex or base64 and names the variable when its length is wrong', () => {
    expect(parseKey(key.toString('hex')).equals(key)).toBe(true);
    expect(parseKey(key.toString('base64')).equals(key)).toBe(true);
    expect(parseKey(key.toString('base64url')).equals(key)).toBe(true);
    expect(() => parseKey(randomBytes(16).toString('base64'))).toThrow(/SLEARN_PAYLOAD_KEY must be a 32-byte.*got 16 bytes.*openssl rand -base64 32/);
    expect(() => parseKey('not a key!')).toThrow(/SLEARN_PAYLOAD_KEY.*neither hex nor base64/);
    expect(dataConverter({})).toEqual({});
    expect(dataConverter({ [KEY_ENV]: '' })).toEqual({});
    expect(dataConverter({ [KEY_ENV]: key.toString('base64') }).payloadCodecs?.[0]).toBeInstanceOf(EncryptionCodec);
    expect(() => dataConverter({ [KEY_ENV]: 'abcd' })).toThrow(/SLEARN_PAYLOAD_KEY/);
  });
});

describe('a whole run with SLEARN_PAYLOAD_KEY set', () => {
  const marker = `zq${randomBytes(6).toString('hex')}`;
  // The marker is in the data directory (so in every path), the config name and every question;
  // not in `dir`, whose path the dev server records in its own database.
  const dir = tempDir('slearn-enc-');
  const data = join(dir, `data-${marker}`);
  const world = makeWorld(12).map((w) => ({ ...w, question: `In the ${marker} domain, ${w.question}` }));
  const saved = process.env[KEY_ENV];
  let fake: FakeModel;
  let server: Awaited<ReturnType<typeof temporal>>;
  let stopWorker: () => Promise<void>;

  beforeAll(async () => {
    process.env[KEY_ENV] = randomBytes(32).toString('base64'); // read by runWorkers and connect at creation
    fake = await startFakeModel({ items: world, knownPercent: 50 });
    server = await temporal(dir);
    stopWorker = await inProcessWorker(server.address);
  });

  afterAll(async () => {
    await stopWorker?.();
    await server?.stop();
    await fake?.close();
    if (saved === undefined) delete process.env[KEY_ENV];
    else process.env[KEY_ENV] = saved;
  });

  it('stores only ciphertext in Temporal, while a client with the key reads the result and the audit', async () => {
    mkdirSync(data);
    writeJsonl(join(data, `train-${marker}.jsonl`), world);
    const configFile = writeConfig(data, fake.baseUrl, { name: `cfg-${marker}`, dataset: `train-${marker}.jsonl` });
    const client = await connect(server.address);
    const handle = await startRun(client, configFile, { runId: 'enc-run' });
    const result = (await handle.result()) as RunResult;
    expect(result.counts).toMatchObject({ items: 12, answered: 12, graded: 12, ungradeable: 0 });
    expect(result.evaluation.tuned).toMatchObject({ correct: 12, total: 12 });
    // Decoded with the key, the history does carry the marker: the config path is in the run's input.
    const started = (await handle.fetchHistory()).events?.[0]?.workflowExecutionStartedEventAttributes?.input;
    expect((await payloadValue<RunInput>(client, started))?.configFile).toContain(marker);

    const histories = rawHistories(server.address, 'enc-run');
    for (const { json } of histories) {
      expect(jsonContains(json, marker)).toBe(false);
      // Sanity: the history does have payloads, and they are the encrypted kind.
      expect(json).toContain('"encoding"');
      expect(jsonContains(json, ENCODING)).toBe(true);
      expect(jsonContains(json, 'json/plain')).toBe(false);
    }
    // Nor anywhere in the server's database files.
    const dbFiles = readdirSync(dir).filter((f) => f.startsWith('temporal.db'));
    expect(dbFiles.length).toBeGreaterThan(0);
    const leaking = filesContaining(dir, marker).filter((f) => dbFiles.some((d) => f.endsWith(d)));
    expect(leaking).toEqual([]);

    // A client without the key cannot read the result; the audit with the key reads everything.
    await expect(server.client.workflow.getHandle('enc-run').result()).rejects.toThrow();
    const a = await audit(client, 'enc-run');
    expect(a.result?.counts).toEqual(result.counts);
    expect(a.runs[0].activities.some((x) => /^shard \d+$/.test(x.input))).toBe(true);
    expect(a.lineage.length).toBeGreaterThan(0);
    await client.connection.close();
  });
});
