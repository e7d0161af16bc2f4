import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { Client } from '@temporalio/client';
import type { Payload } from '@temporalio/common';
import { temporal as proto } from '@temporalio/proto';
import { audit, connect, payloadValue, runStatus, startRun } from '../src/client';
import { auditText } from '../src/cli/output';
import { ALLOW_PLAINTEXT_ENV, EncryptionCodec, ENCODING, KEY_ENV, keyId, METADATA_KEY_ID, OLD_KEYS_ENV, parseKey } from '../src/temporal/codec';
import { codecServer } from '../src/temporal/codecServer';
import { dataConverter } from '../src/temporal/dataConverter';
import { TASK_QUEUE, type RunInput } from '../src/schemas/run';
import { selfLearning } from '../src/workflows';
import { startFakeModel, type FakeModel } from './support/fakeModel';
import { filesContaining, jsonContains, rawHistories } from './support/history';
import { temporal, tempDir, inProcessWorker, waitFor } from './support/stack';
import { makeWorld, paraphrases, writeConfig, writeWorld } from './support/world';

const EventType = proto.api.enums.v1.EventType;
const utf8 = (s: string) => new Uint8Array(Buffer.from(s));
const jsonPayload = (v: unknown): Payload => ({ metadata: { encoding: utf8('json/plain') }, data: utf8(JSON.stringify(v)) });

describe('the AES-256-GCM payload codec', () => {
  const key = randomBytes(32);
  const value = { question: 'What is the secret of the soil?', n: 42 };

  it('round-trips payloads, with metadata naming the cipher and the key id, and a fresh IV each time', async () => {
    const codec = new EncryptionCodec(key);
    const [a, b] = await codec.encode([jsonPayload(value), jsonPayload(value)]);
    expect(Buffer.from(a.metadata!.encoding).toString()).toBe(ENCODING);
    expect(Buffer.from(a.metadata![METADATA_KEY_ID]).toString()).toBe(keyId(key));
    expect(Buffer.from(a.data!).toString('latin1')).not.toContain('secret');
    expect(Buffer.from(a.data!).equals(Buffer.from(b.data!))).toBe(false);
    const [back] = await codec.decode([a]);
    expect(Buffer.from(back.metadata!.encoding).toString()).toBe('json/plain');
    expect(JSON.parse(Buffer.from(back.data!).toString())).toEqual(value);
    expect(await codec.encode([])).toEqual([]);
  });

  it('refuses a plaintext payload when a key is set, unless SLEARN_PAYLOAD_ALLOW_PLAINTEXT=1 (reading older runs)', async () => {
    const plain = jsonPayload(value);
    await expect(new EncryptionCodec(key).decode([plain])).rejects.toThrow(
      new RegExp(
        `refused a plaintext payload: ${KEY_ENV} is set, so every payload must be encrypted \\(set ${ALLOW_PLAINTEXT_ENV}=1 to read older unencrypted runs\\)`,
      ),
    );
    const strict = EncryptionCodec.fromEnv({ [KEY_ENV]: key.toString('base64') })!;
    await expect(strict.decode([plain])).rejects.toThrow(/refused a plaintext payload/);
    expect(EncryptionCodec.fromEnv({ [KEY_ENV]: key.toString('base64'), [ALLOW_PLAINTEXT_ENV]: 'yes' })!.allowPlaintext).toBe(false); // only "1"
    const migrating = EncryptionCodec.fromEnv({ [KEY_ENV]: key.toString('base64'), [ALLOW_PLAINTEXT_ENV]: '1' })!;
    expect(await migrating.decode([plain])).toEqual([plain]);
    // Allowing plaintext never weakens encryption: what it writes is still ciphertext, and tampering still fails.
    const [enc] = await migrating.encode([plain]);
    expect(Buffer.from(enc.metadata!.encoding).toString()).toBe(ENCODING);
    const data = Uint8Array.from(enc.data!);
    data[20] ^= 1;
    await expect(migrating.decode([{ ...enc, data }])).rejects.toThrow(/failed authentication/);
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
    const dc = dataConverter({ [KEY_ENV]: key.toString('base64') });
    expect(dc.payloadCodecs?.[0]).toBeInstanceOf(EncryptionCodec);
    // Failure messages and stack traces are encrypted too: they move into an encoded attribute.
    expect(dc.failureConverterPath).toMatch(/failureConverter/);
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
  const key = randomBytes(32).toString('base64');
  let fake: FakeModel;
  let server: Awaited<ReturnType<typeof temporal>>;
  let stopWorker: () => Promise<void>;
  let client: Client;

  beforeAll(async () => {
    process.env[KEY_ENV] = key; // read by runWorkers and connect at creation
    fake = await startFakeModel({ items: world, knownPercent: 50 });
    server = await temporal(dir);
    stopWorker = await inProcessWorker(server.address);
    client = await connect({ ...process.env, TEMPORAL_ADDRESS: server.address });
  });

  afterAll(async () => {
    await client?.connection.close();
    await stopWorker?.();
    await server?.stop();
    await fake?.close();
    if (saved === undefined) delete process.env[KEY_ENV];
    else process.env[KEY_ENV] = saved;
  });

  /** No raw history of the run (every execution, straight from the server) holds `marker`; and they are encrypted. */
  function expectOnlyCiphertext(runId: string): string[] {
    const histories = rawHistories(server.address, runId);
    for (const { json } of histories) {
      expect(jsonContains(json, marker)).toBe(false);
      expect(json).toContain('"encoding"');
      expect(jsonContains(json, ENCODING)).toBe(true);
      expect(jsonContains(json, 'json/plain')).toBe(false);
    }
    return histories.map((h) => h.json);
  }

  it('stores only ciphertext in Temporal, while a client with the key reads the result and the audit', async () => {
    mkdirSync(data);
    writeWorld(data, world, paraphrases(world.slice(0, 6)));
    const configFile = writeConfig(data, fake.baseUrl, { name: `cfg-${marker}` });
    const handle = await startRun(client, configFile, { runId: 'enc-run' });
    const result = await handle.result();
    expect(result.counts).toMatchObject({ items: 12, answered: 12, graded: 12, ungradeable: 0 });
    expect(result.evaluation!.tuned).toMatchObject({ correct: 6, total: 6 });
    // Decoded with the key, the history does carry the marker: the config path is in the run's input.
    const started = (await handle.fetchHistory()).events?.[0]?.workflowExecutionStartedEventAttributes?.input;
    expect((await payloadValue<RunInput>(client, started))?.configFile).toContain(marker);

    expectOnlyCiphertext('enc-run');
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
  });

  it('the default run id does not carry the config name (workflow ids are never encrypted)', async () => {
    const configFile = writeConfig(data, fake.baseUrl, { name: `cfg-${marker}` });
    const handle = await startRun(client, configFile);
    expect(handle.workflowId).toMatch(/^run-\d{8}-\d{6}-[0-9a-f]{6}$/);
    await handle.result();
    expectOnlyCiphertext(handle.workflowId);
  });

  it("a run's failure message is encrypted in history; status and audit with the key show it", async () => {
    // A config file the worker cannot find: prepare fails, non-retryable, with the path (and the marker) in its message.
    const input: RunInput = { configFile: join(data, `gone-${marker}.yaml`), store: `file://${join(dir, 'artifacts')}` };
    const handle = await client.workflow.start(selfLearning, { taskQueue: TASK_QUEUE, workflowId: 'enc-failing', args: [input] });
    await expect(handle.result()).rejects.toThrow(/Workflow execution failed/);
    const json = expectOnlyCiphertext('enc-failing').join('\n');
    expect(json).toContain('EVENT_TYPE_WORKFLOW_EXECUTION_FAILED');
    expect(json).toContain('Encoded failure'); // the SDK's placeholder: the real message is in the encrypted attributes

    // `slearn status` and `slearn audit`, with the key, show what went wrong and where.
    const s = await runStatus(client, 'enc-failing');
    expect(s.status).toBe('FAILED');
    expect(s.failure).toContain(`gone-${marker}.yaml: config file not found`);
    const a = await audit(client, 'enc-failing');
    const prepare = a.runs[0].activities.find((x) => x.activity === 'prepare')!;
    expect(prepare).toMatchObject({ outcome: 'failed', attempts: 1 });
    expect(prepare.failure).toContain(`gone-${marker}.yaml: config file not found`);
    expect(auditText(a)).toMatch(/prepare .*failed .*invalid config/s);
  });

  it('a client without the key cannot start a run: the worker refuses its plaintext input and nothing runs', async () => {
    mkdirSync(join(dir, 'plain'));
    writeWorld(join(dir, 'plain'), world, paraphrases(world.slice(0, 6)));
    const configFile = writeConfig(join(dir, 'plain'), fake.baseUrl, { name: 'plain-start' });
    const asked = fake.stats.total;
    // server.client has the SDK's default converter: its input is plaintext JSON.
    const handle = await server.client.workflow.start(selfLearning, {
      taskQueue: TASK_QUEUE,
      workflowId: 'plain-start',
      args: [{ configFile, store: `file://${join(dir, 'plain', 'artifacts')}` }],
    });
    let failed: proto.api.history.v1.IHistoryEvent | undefined;
    await waitFor(
      async () => {
        failed = (await handle.fetchHistory()).events?.find((e) => e.eventType === EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED);
        return failed !== undefined;
      },
      30_000,
      'the workflow task to fail',
    );
    const { failureConverter, payloadCodecs } = client.options.loadedDataConverter;
    const { decodeFailure } = await import('@temporalio/common/lib/internal-non-workflow/codec-helpers');
    const err = failureConverter.failureToError(
      await decodeFailure(payloadCodecs, failed!.workflowTaskFailedEventAttributes!.failure!),
      client.options.loadedDataConverter.payloadConverter,
    );
    expect(err.message).toMatch(/refused a plaintext payload/);
    const events = (await handle.fetchHistory()).events ?? [];
    expect(events.some((e) => e.eventType === EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)).toBe(false);
    expect(fake.stats.total).toBe(asked);
    await handle.terminate('refused plaintext input');
  });

  it('the codec server decodes a payload of the run for the web UI: bearer token, CORS for the UI origin only', async () => {
    const token = randomBytes(24).toString('hex');
    const origin = 'http://localhost:8233';
    const srv = codecServer(new EncryptionCodec(parseKey(key)), { origins: [origin], token });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    const url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
    try {
      // The run's input as the web UI has it: the raw history's JSON payload (base64 metadata and data).
      const history = JSON.parse(rawHistories(server.address, 'enc-run')[0].json);
      const payload = history.events[0].workflowExecutionStartedEventAttributes.input.payloads[0];
      expect(Buffer.from(payload.metadata.encoding, 'base64').toString()).toBe(ENCODING);
      const decode = (headers: Record<string, string>, body: unknown = { payloads: [payload] }) =>
        fetch(`${url}/decode`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });

      const ok = await decode({ authorization: `Bearer ${token}`, origin, 'x-namespace': 'default' });
      expect(ok.status).toBe(200);
      expect(ok.headers.get('access-control-allow-origin')).toBe(origin);
      const [plain] = ((await ok.json()) as { payloads: { metadata: Record<string, string>; data: string }[] }).payloads;
      expect(Buffer.from(plain.metadata.encoding, 'base64').toString()).toBe('json/plain');
      const decoded = JSON.parse(Buffer.from(plain.data, 'base64').toString()) as RunInput;
      expect(decoded.configFile).toContain(marker);

      // Without the token, or with a wrong one: 401, and nothing decoded.
      for (const headers of [{}, { authorization: `Bearer ${token.slice(0, -1)}x` }, { authorization: token }] as Record<string, string>[]) {
        const r = await decode({ origin, ...headers });
        expect(r.status).toBe(401);
        expect(await r.text()).not.toContain(marker);
      }
      // Another origin gets no CORS headers and is refused.
      const evil = await decode({ authorization: `Bearer ${token}`, origin: 'http://evil.example' });
      expect(evil.status).toBe(403);
      expect(evil.headers.get('access-control-allow-origin')).toBeNull();
      expect(await evil.text()).not.toContain(marker);
      // A non-browser client (no Origin) with the token is answered, without CORS headers.
      const cli = await decode({ authorization: `Bearer ${token}` });
      expect(cli.status).toBe(200);
      expect(cli.headers.get('access-control-allow-origin')).toBeNull();

      // The browser's preflight: allowed for the UI's origin, with the headers the UI sends.
      const pre = await fetch(`${url}/decode`, {
        method: 'OPTIONS',
        headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type,x-namespace' },
      });
      expect(pre.status).toBe(204);
      expect(pre.headers.get('access-control-allow-origin')).toBe(origin);
      expect(pre.headers.get('access-control-allow-methods')).toMatch(/POST/);
      expect(pre.headers.get('access-control-allow-headers')).toMatch(/Authorization/i);
      expect(pre.headers.get('access-control-allow-headers')).toMatch(/X-Namespace/i);
      const badPre = await fetch(`${url}/decode`, { method: 'OPTIONS', headers: { origin: 'http://evil.example', 'access-control-request-method': 'POST' } });
      expect(badPre.status).toBe(403);
      expect(badPre.headers.get('access-control-allow-origin')).toBeNull();

      // Bad requests are answered with what is wrong.
      expect((await decode({ authorization: `Bearer ${token}` }, { nope: 1 })).status).toBe(400);
      expect((await fetch(`${url}/other`, { method: 'POST', headers: { authorization: `Bearer ${token}` } })).status).toBe(404);
    } finally {
      await new Promise((r) => srv.close(r));
    }
  });
});
