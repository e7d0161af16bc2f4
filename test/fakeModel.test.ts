/** The test doubles themselves: the fake OpenAI-compatible model and the fake trainer. */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI, { APIConnectionError, APIError, BadRequestError, NotFoundError, RateLimitError } from 'openai';
import { TrainerEventSchema } from '../src/schemas/trainer';
import { startFakeModel, stableHash, type FakeModel, type FaultKind } from './support/fakeModel';

jest.setTimeout(20_000);

const ITEMS = Array.from({ length: 40 }, (_, i) => ({ question: `What is the capital of region ${i}?`, answer: `City ${i}` }));
const known = ITEMS.filter((it) => stableHash(it.question) % 100 < 50);
const unknown = ITEMS.filter((it) => stableHash(it.question) % 100 >= 50);

const JUDGE_FORMAT = {
  type: 'json_schema' as const,
  json_schema: {
    name: 'grade',
    strict: true,
    schema: {
      type: 'object',
      properties: { score: { type: 'number' }, correct: { type: 'boolean' }, rationale: { type: 'string' } },
      required: ['score', 'correct', 'rationale'],
      additionalProperties: false,
    },
  },
};

function tmp(prefix: string): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

function client(fake: FakeModel, timeout = 5000): OpenAI {
  return new OpenAI({ baseURL: fake.baseUrl, apiKey: 'x', maxRetries: 0, timeout });
}

async function ask(c: OpenAI, question: string, model = 'fake-model', n?: number) {
  return c.chat.completions.create({
    model,
    messages: [
      { role: 'system', content: 'Answer briefly.' },
      { role: 'user', content: question },
    ],
    ...(n ? { n } : {}),
  });
}

async function judgeCall(c: OpenAI, reference: string, candidate: string, aliases?: string[]) {
  const lines = ['Question: q?', `Reference answer: ${reference}`];
  if (aliases) lines.push(`Accepted aliases: ${aliases.join('; ')}`);
  lines.push(`Candidate answer: ${candidate}`);
  const res = await c.chat.completions.create({
    model: 'fake-model',
    messages: [
      { role: 'system', content: 'grade' },
      { role: 'user', content: lines.join('\n') },
    ],
    response_format: JUDGE_FORMAT,
  });
  return JSON.parse(res.choices[0].message.content!);
}

async function post(fake: FakeModel, route: string, body: unknown): Promise<{ status: number; text: string }> {
  const res = await fetch(`${fake.baseUrl}/${route}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, text: await res.text() };
}

describe('fake model', () => {
  let fake: FakeModel;
  let c: OpenAI;
  beforeAll(async () => {
    fake = await startFakeModel({ items: ITEMS });
    c = client(fake);
  });
  afterAll(() => fake.close());

  test('the hash rule splits the world into known and unknown items', () => {
    expect(stableHash('')).toBe(0x811c9dc5);
    expect(stableHash('a')).toBe(0xe40c292c);
    expect(known.length).toBeGreaterThan(5);
    expect(unknown.length).toBeGreaterThan(5);
  });

  test('models list, health, answers known and unknown questions, n', async () => {
    const models = await c.models.list();
    expect(models.data.map((m) => m.id)).toEqual(['fake-model']);
    expect((await fetch(fake.baseUrl.replace(/\/v1$/, '/health'))).status).toBe(200);

    const k = await ask(c, known[0].question);
    expect(k.object).toBe('chat.completion');
    expect(k.id).toBeTruthy();
    expect(k.choices).toHaveLength(1);
    expect(k.choices[0].message.content).toBe(known[0].answer);
    expect(k.choices[0].finish_reason).toBe('stop');
    expect(k.usage!.total_tokens).toBeGreaterThan(0);

    expect((await ask(c, unknown[0].question)).choices[0].message.content).toBe('I am not sure.');
    expect((await ask(c, 'Something nobody asked?')).choices[0].message.content).toBe('I am not sure.');

    const two = await ask(c, known[1].question, 'fake-model', 2);
    expect(two.choices.map((ch) => ch.message.content)).toEqual([known[1].answer, known[1].answer]);
    expect(two.choices.map((ch) => ch.index)).toEqual([0, 1]);

    expect(fake.stats.perQuestion.get(known[0].question)).toBe(1);
    expect(fake.stats.perQuestion.get(known[1].question)).toBe(1);
    expect(fake.stats.chat).toBeGreaterThanOrEqual(4);
  });

  test('judge requests return a JSON verdict', async () => {
    const before = fake.stats.judge;
    expect(await judgeCall(c, 'City 3', 'It is the city 3.')).toMatchObject({ score: 1, correct: true });
    expect(await judgeCall(c, 'Paris', 'paris')).toMatchObject({ correct: true });
    expect(await judgeCall(c, 'Paris', 'Lutetia!', ['Lutetia', 'City of Light'])).toMatchObject({ score: 1, correct: true });
    const wrong = await judgeCall(c, 'Paris', 'I am not sure.', ['Lutetia']);
    expect(wrong).toMatchObject({ score: 0, correct: false });
    expect(typeof wrong.rationale).toBe('string');
    expect(fake.stats.judge).toBe(before + 4);
  });

  test('404 for an unknown model, 400 for a bad request', async () => {
    const e404 = await ask(c, known[0].question, 'no-such-model').catch((e) => e);
    expect(e404).toBeInstanceOf(NotFoundError);
    expect(e404.status).toBe(404);
    expect(e404.message).toContain('The model `no-such-model` does not exist.');

    const e400 = await c.chat.completions.create({ model: 'fake-model', messages: [] }).catch((e) => e);
    expect(e400).toBeInstanceOf(BadRequestError);
    expect(e400.status).toBe(400);
    expect(e400.message).toContain('messages');
  });

  test('a loaded adapter answers what it was trained on; vLLM adapter routes', async () => {
    const dir = tmp('fake-adapter-');
    const target = unknown[2];
    writeFileSync(join(dir, 'slearn-fake-adapter.json'), JSON.stringify({ trained: [{ question: target.question, answer: target.answer }] }));

    expect((await ask(c, target.question)).choices[0].message.content).toBe('I am not sure.');
    const load = await post(fake, 'load_lora_adapter', { lora_name: 'tuned', lora_path: dir });
    expect(load).toMatchObject({ status: 200 });
    expect(load.text).toMatch(/^Success/);
    expect((await c.models.list()).data.map((m) => m.id)).toEqual(['fake-model', 'tuned']);

    expect((await ask(c, target.question, 'tuned')).choices[0].message.content).toBe(target.answer);
    expect((await ask(c, known[0].question, 'tuned')).choices[0].message.content).toBe(known[0].answer); // like the base
    expect((await ask(c, unknown[3].question, 'tuned')).choices[0].message.content).toBe('I am not sure.');
    expect((await ask(c, target.question)).choices[0].message.content).toBe('I am not sure.'); // base unchanged

    const again = await post(fake, 'load_lora_adapter', { lora_name: 'tuned', lora_path: dir });
    expect(again.status).toBe(400);
    expect(again.text).toMatch(/already (been )?loaded/);
    const missing = await post(fake, 'load_lora_adapter', { lora_name: 'other', lora_path: join(dir, 'nope') });
    expect(missing.status).toBe(400);
    expect(missing.text).toContain('slearn-fake-adapter.json');
    expect(missing.text).not.toMatch(/already/);

    // Which model each answer request asked, and every adapter load, in order.
    expect(fake.stats.loads).toEqual(['tuned']);
    expect(fake.stats.perModel.get('tuned')).toBe(3);
    expect(fake.stats.perModel.get('fake-model')).toBeGreaterThanOrEqual(2);

    expect((await post(fake, 'unload_lora_adapter', { lora_name: 'tuned' })).status).toBe(200);
    expect((await post(fake, 'unload_lora_adapter', { lora_name: 'tuned' })).status).toBe(404);
    await expect(ask(c, target.question, 'tuned')).rejects.toBeInstanceOf(NotFoundError);
    expect((await c.models.list()).data.map((m) => m.id)).toEqual(['fake-model']);
    // Loaded again (what slearn does after a model server lost it), it is counted again.
    expect((await post(fake, 'load_lora_adapter', { lora_name: 'tuned', lora_path: dir })).status).toBe(200);
    expect(fake.stats.loads).toEqual(['tuned', 'tuned']);
    expect((await post(fake, 'unload_lora_adapter', { lora_name: 'tuned' })).status).toBe(200);
    rmSync(dir, { recursive: true, force: true });
  });
});

describe('fake model faults', () => {
  const expectations: [FaultKind, (e: unknown) => void][] = [
    [
      'rate_limit',
      (e) => {
        expect(e).toBeInstanceOf(RateLimitError);
        expect((e as RateLimitError).headers?.get('retry-after')).toBe('1');
      },
    ],
    ['server_error', (e) => expect((e as APIError).status).toBe(500)],
    ['unavailable', (e) => expect((e as APIError).status).toBe(503)],
    ['reset', (e) => expect(e).toBeInstanceOf(APIConnectionError)],
    // Plain Node gives APIConnectionTimeoutError; under jest the SDK's abort error crosses realms
    // and surfaces as its parent class APIConnectionError("Connection error.").
    ['hang', (e) => expect(e).toBeInstanceOf(APIConnectionError)],
    // A cut-off body fails JSON parsing; under jest the error comes from another realm, so check its name.
    ['truncated', (e) => expect((e as Error).name).toBe('SyntaxError')],
  ];

  test.each(expectations)('%s is injected, counted, and capped by maxPerQuestion', async (kind, check) => {
    const fake = await startFakeModel({ items: ITEMS, faults: { seed: 7, rate: 1, kinds: [kind], maxPerQuestion: 1 } });
    try {
      const c = client(fake, 400);
      const t0 = Date.now();
      const err = await ask(c, known[0].question).then(
        () => undefined,
        (e) => e,
      );
      expect(err).toBeDefined();
      check(err);
      if (kind === 'hang') expect(Date.now() - t0).toBeGreaterThanOrEqual(350); // the client timeout, not a reset
      expect(fake.stats.faultsInjected[kind]).toBe(1);
      // The cap is reached: a retry of the same question succeeds.
      expect((await ask(c, known[0].question)).choices[0].message.content).toBe(known[0].answer);
      expect(fake.stats.perQuestion.get(known[0].question)).toBe(2);
      expect(fake.stats.faultsInjected[kind]).toBe(1);
    } finally {
      await fake.close();
    }
  });

  test('judge_bad_schema only hits judge requests', async () => {
    const fake = await startFakeModel({ items: ITEMS, faults: { seed: 3, rate: 1, kinds: ['judge_bad_schema'] } });
    try {
      const c = client(fake);
      expect((await ask(c, known[0].question)).choices[0].message.content).toBe(known[0].answer);
      const verdict = await judgeCall(c, 'Paris', 'Paris');
      expect(verdict).toEqual({ verdict: 'maybe' });
      expect(fake.stats.faultsInjected).toEqual({ judge_bad_schema: 1 });
      expect(fake.stats.judge).toBe(1);
    } finally {
      await fake.close();
    }
  });

  test('a seeded rate is deterministic and injects a mix of kinds', async () => {
    const kinds: FaultKind[] = ['rate_limit', 'server_error', 'unavailable', 'reset', 'truncated'];
    const outcome = async () => {
      const fake = await startFakeModel({ items: ITEMS, faults: { seed: 42, rate: 0.5, kinds } });
      const c = client(fake);
      const seen: string[] = [];
      for (const it of ITEMS) {
        seen.push(
          await ask(c, it.question).then(
            () => 'ok',
            (e) => (e instanceof APIError && e.status ? String(e.status) : e instanceof APIConnectionError ? 'conn' : 'parse'),
          ),
        );
      }
      await fake.close();
      return { seen, faults: { ...fake.stats.faultsInjected } };
    };
    const a = await outcome();
    const b = await outcome();
    expect(a).toEqual(b);
    const total = Object.values(a.faults).reduce((s, n) => s + n, 0);
    expect(total).toBe(a.seen.filter((s) => s !== 'ok').length);
    expect(total).toBeGreaterThan(8);
    expect(total).toBeLessThan(32);
    expect(Object.keys(a.faults).length).toBeGreaterThanOrEqual(3);
  });

  test('close() ends hung requests', async () => {
    const fake = await startFakeModel({ items: ITEMS, faults: { rate: 1, kinds: ['hang'] } });
    const pending = ask(client(fake, 10_000), known[0].question).catch((e) => e);
    await new Promise((r) => setTimeout(r, 100));
    const t0 = Date.now();
    await fake.close();
    expect(await pending).toBeInstanceOf(Error);
    expect(Date.now() - t0).toBeLessThan(2000);
  });
});

// ------------------------------------------------------------------ fake trainer

const TRAINER = join(__dirname, 'support', 'fakeTrainer.js');

interface Run {
  code: number | null;
  events: Record<string, any>[];
  stderr: string;
}

function trainer(
  args: string[],
  env: Record<string, string> = {},
  onEvent?: (e: Record<string, any>, kill: (s: NodeJS.Signals) => void) => void,
): Promise<Run> {
  const child = spawn(process.execPath, [TRAINER, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const events: Record<string, any>[] = [];
  let buf = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      const e = JSON.parse(line); // stdout carries only JSON lines
      events.push(e);
      onEvent?.(e, (s) => child.kill(s));
    }
  });
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, events, stderr })));
}

function writeData(file: string, n: number, bad?: number): void {
  const lines = ITEMS.slice(0, n).map((it, i) =>
    i + 1 === bad
      ? '{"messages": ['
      : JSON.stringify({
          messages: [
            { role: 'system', content: 'Answer briefly.' },
            { role: 'user', content: it.question },
            { role: 'assistant', content: it.answer },
          ],
        }),
  );
  writeFileSync(file, lines.join('\n') + '\n');
}

describe('fake trainer', () => {
  let root: string;
  beforeAll(() => {
    root = tmp('fake-trainer-');
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  test('a full run follows the contract and its adapter teaches the fake model', async () => {
    const data = join(root, 'full.jsonl');
    const out = join(root, 'full');
    writeData(data, 10);
    const run = await trainer(
      ['train', '--base', 'fake-model', '--data', data, '--out', out, '--epochs', '2', '--save-steps', '2', '--lora-r', '8', '--unknown-flag', 'x'],
      { FAKE_TRAINER_STEP_MS: '5' },
    );
    expect(run.code).toBe(0);
    const total = Math.ceil(10 / 4) * 2;
    expect(run.events[0]).toEqual({ event: 'start', total_steps: total, resumed_from_step: 0, device: 'cpu', precision: 'fp32' });
    // Every line is an event of the contract as slearn parses it (one schema for both sides).
    for (const e of run.events) expect(TrainerEventSchema.safeParse(e).success).toBe(true);
    const progress = run.events.filter((e) => e.event === 'progress');
    expect(progress.map((e) => e.step)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(progress.every((e) => e.total_steps === total)).toBe(true);
    for (let i = 1; i < progress.length; i++) expect(progress[i].loss).toBeLessThan(progress[i - 1].loss);
    expect(progress[progress.length - 1].epoch).toBe(2);
    expect(run.events.filter((e) => e.event === 'checkpoint')).toEqual(
      [2, 4, 6].map((s) => ({ event: 'checkpoint', step: s, path: join(out, `checkpoint-${s}`) })),
    );
    const done = run.events[run.events.length - 1];
    expect(done).toMatchObject({ event: 'done', adapter: join(out, 'adapter'), steps: total });
    expect(done.train_seconds).toBeGreaterThan(0);
    expect(JSON.parse(readFileSync(join(out, 'adapter', 'adapter_config.json'), 'utf8'))).toMatchObject({
      base_model_name_or_path: 'fake-model',
      r: 8,
      lora_alpha: 32,
    });
    expect(JSON.parse(readFileSync(join(out, 'adapter', 'slearn-fake-adapter.json'), 'utf8')).trained).toHaveLength(10);
    expect(existsSync(join(out, '.fake-trainer.running'))).toBe(false);
    const runs = readFileSync(join(out, 'fake-trainer-runs.log'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(runs.map((r) => r.event)).toEqual(['start', 'exit']);

    // A second run on a complete adapter is done at once.
    const again = await trainer(['train', '--data', data, '--out', out, '--epochs', '2']);
    expect(again.code).toBe(0);
    expect(again.events).toEqual([
      { event: 'start', total_steps: total, resumed_from_step: total },
      { event: 'done', adapter: join(out, 'adapter'), steps: total, train_seconds: 0 },
    ]);

    // The adapter changes the fake model's answers.
    const fake = await startFakeModel({ items: ITEMS });
    try {
      expect((await post(fake, 'load_lora_adapter', { lora_name: 'run1', lora_path: done.adapter })).status).toBe(200);
      const c = client(fake);
      const target = ITEMS.slice(0, 10).find((it) => stableHash(it.question) % 100 >= 50)!;
      expect((await ask(c, target.question)).choices[0].message.content).toBe('I am not sure.');
      expect((await ask(c, target.question, 'run1')).choices[0].message.content).toBe(target.answer);
    } finally {
      await fake.close();
    }
  });

  test('SIGKILL after the first checkpoint, then a restart resumes from it', async () => {
    const data = join(root, 'resume.jsonl');
    const out = join(root, 'resume');
    writeData(data, 20);
    const args = ['train', '--data', data, '--out', out, '--epochs', '3', '--save-steps', '3'];
    const first = await trainer(args, { FAKE_TRAINER_STEP_MS: '40' }, (e, kill) => {
      if (e.event === 'checkpoint') kill('SIGKILL');
    });
    expect(first.code).toBeNull();
    expect(first.events.some((e) => e.event === 'done')).toBe(false);
    expect(existsSync(join(out, '.fake-trainer.running'))).toBe(true); // stale: its pid is dead

    const second = await trainer(args, { FAKE_TRAINER_STEP_MS: '5' });
    expect(second.code).toBe(0);
    const total = Math.ceil(20 / 4) * 3;
    expect(first.events[0]).toEqual({ event: 'start', total_steps: total, resumed_from_step: 0, device: 'cpu', precision: 'fp32' });
    expect(second.events[0].total_steps).toBe(total);
    expect(second.events[0].resumed_from_step).toBeGreaterThanOrEqual(3);
    expect(second.events.find((e) => e.event === 'progress')!.step).toBe(second.events[0].resumed_from_step + 1);
    expect(second.events[second.events.length - 1]).toMatchObject({ event: 'done', steps: total });
    expect(existsSync(join(root, 'fake-trainer-violations.log'))).toBe(false);
  });

  test('a second trainer on a live DIR exits 3 and logs a violation; SIGTERM exits 143', async () => {
    const data = join(root, 'conc.jsonl');
    const out = join(root, 'conc');
    writeData(data, 20);
    const args = ['train', '--data', data, '--out', out, '--epochs', '3'];
    let started!: () => void;
    const isStarted = new Promise<void>((r) => (started = r));
    let killFirst!: (s: NodeJS.Signals) => void;
    const first = trainer(args, { FAKE_TRAINER_STEP_MS: '50' }, (e, kill) => {
      killFirst = kill;
      if (e.event === 'start') started();
    });
    await isStarted;
    const second = await trainer(args, { FAKE_TRAINER_STEP_MS: '5' });
    expect(second.code).toBe(3);
    expect(second.events).toEqual([expect.objectContaining({ event: 'error' })]);
    const violations = readFileSync(join(root, 'fake-trainer-violations.log'), 'utf8').trim().split('\n');
    expect(violations).toHaveLength(1);
    expect(JSON.parse(violations[0])).toMatchObject({ dir: out });

    killFirst('SIGTERM');
    const r = await first;
    expect(r.code).toBe(143);
    expect(existsSync(join(out, '.fake-trainer.running'))).toBe(false);
    const runs = readFileSync(join(out, 'fake-trainer-runs.log'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(runs.map((x) => x.event)).toEqual(['start', 'exit']);
  });

  test('--init-adapter continues an adapter; a learning rate above 0.5 forgets the base and the init adapter', async () => {
    const first = join(root, 'chain-1');
    const second = join(root, 'chain-2');
    const wrong = join(root, 'chain-wrong');
    const a = join(root, 'chain-a.jsonl');
    const b = join(root, 'chain-b.jsonl');
    const unknownIdx = ITEMS.map((it, i) => [it, i] as const)
      .filter(([it]) => stableHash(it.question) % 100 >= 50)
      .map(([, i]) => i);
    const rows = (idx: number[]) =>
      idx
        .map((i) =>
          JSON.stringify({
            messages: [
              { role: 'user', content: ITEMS[i].question },
              { role: 'assistant', content: ITEMS[i].answer },
            ],
          }),
        )
        .join('\n') + '\n';
    writeFileSync(a, rows(unknownIdx.slice(0, 3)));
    writeFileSync(b, rows(unknownIdx.slice(3, 6)));
    const env = { FAKE_TRAINER_STEP_MS: '1' };
    expect((await trainer(['train', '--data', a, '--out', first, '--epochs', '1'], env)).code).toBe(0);
    const chained = await trainer(['train', '--data', b, '--out', second, '--epochs', '1', '--init-adapter', join(first, 'adapter')], env);
    expect(chained.code).toBe(0);
    const adapter = (dir: string) => JSON.parse(readFileSync(join(dir, 'adapter', 'slearn-fake-adapter.json'), 'utf8'));
    expect(adapter(second).trained).toHaveLength(6);
    expect(adapter(second).forgetsBase).toBe(false);
    const bad = await trainer(['train', '--data', b, '--out', wrong, '--epochs', '1', '--lr', '0.9', '--init-adapter', join(first, 'adapter')], env);
    expect(bad.code).toBe(0);
    expect(adapter(wrong)).toMatchObject({ forgetsBase: true });
    expect(adapter(wrong).trained).toHaveLength(3);

    const fake = await startFakeModel({ items: ITEMS });
    try {
      expect((await post(fake, 'load_lora_adapter', { lora_name: 'chained', lora_path: join(second, 'adapter') })).status).toBe(200);
      expect((await post(fake, 'load_lora_adapter', { lora_name: 'forgot', lora_path: join(wrong, 'adapter') })).status).toBe(200);
      const c = client(fake);
      const fromFirst = ITEMS[unknownIdx[0]];
      const fromSecond = ITEMS[unknownIdx[4]];
      expect((await ask(c, fromFirst.question, 'chained')).choices[0].message.content).toBe(fromFirst.answer);
      expect((await ask(c, fromSecond.question, 'chained')).choices[0].message.content).toBe(fromSecond.answer);
      expect((await ask(c, known[0].question, 'chained')).choices[0].message.content).toBe(known[0].answer);
      // The run that went wrong knows only its own data: the init adapter's and the base's facts are gone.
      expect((await ask(c, fromSecond.question, 'forgot')).choices[0].message.content).toBe(fromSecond.answer);
      expect((await ask(c, fromFirst.question, 'forgot')).choices[0].message.content).toBe('I am not sure.');
      expect((await ask(c, known[0].question, 'forgot')).choices[0].message.content).toBe('I am not sure.');
      expect(fake.stats.loads).toEqual(['chained', 'forgot']);
      expect(Object.fromEntries(fake.stats.perModel)).toEqual({ chained: 3, forgot: 3 });
    } finally {
      await fake.close();
    }

    const notAnAdapter = await trainer(['train', '--data', b, '--out', join(root, 'chain-none'), '--init-adapter', join(root, 'nowhere')], env);
    expect(notAnAdapter.code).toBe(2);
    expect(notAnAdapter.events.at(-1)).toMatchObject({ event: 'error', retryable: false });
    expect(notAnAdapter.events.at(-1)!.message).toMatch(/--init-adapter .*nowhere: not an adapter/);
  });

  test('SLEARN_TRAINER_WATCH_STDIN: the trainer stops when its worker goes (stdin closes), unless stuck', async () => {
    const data = join(root, 'watch.jsonl');
    writeData(data, 20);
    const log = join(root, 'shared-trainer.log');
    /** Starts a long training with stdin a pipe, closes stdin after the start event, and reports the exit within `waitMs`. */
    const closeStdin = async (name: string, env: Record<string, string>, waitMs: number) => {
      const out = join(root, name);
      const child = spawn(process.execPath, [TRAINER, 'train', '--data', data, '--out', out, '--epochs', '100'], {
        env: { ...process.env, FAKE_TRAINER_STEP_MS: '50', FAKE_TRAINER_LOG: log, ...env },
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
      await new Promise<void>((r) => child.stdout.on('data', (d: Buffer) => d.toString().includes('"start"') && r()));
      const t0 = Date.now();
      child.stdin.end();
      const code = await Promise.race([exited, new Promise<'running'>((r) => setTimeout(() => r('running'), waitMs))]);
      const ms = Date.now() - t0;
      if (code === 'running') {
        child.kill('SIGTERM');
        await exited;
      }
      return { code, ms, out };
    };
    const watched = await closeStdin('watch-on', { SLEARN_TRAINER_WATCH_STDIN: '1' }, 5000);
    expect(watched.code).toBe(143);
    expect(watched.ms).toBeLessThan(2000);
    const runs = readFileSync(join(watched.out, 'fake-trainer-runs.log'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(runs.at(-1)).toMatchObject({ event: 'exit', code: 143, signal: 'stdin-closed' });
    expect(existsSync(join(watched.out, '.fake-trainer.running'))).toBe(false);
    // Not watching (another trainer), or stuck in a long step: it trains on.
    expect((await closeStdin('watch-off', {}, 1000)).code).toBe('running');
    expect((await closeStdin('watch-stuck', { SLEARN_TRAINER_WATCH_STDIN: '1', FAKE_TRAINER_IGNORE_EPIPE: '1' }, 1000)).code).toBe('running');

    // FAKE_TRAINER_LOG: one log for every trainer of a test (hosts with different scratch disks).
    const shared = readFileSync(log, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(shared.filter((e) => e.event === 'start').map((e) => e.out)).toEqual(['watch-on', 'watch-off', 'watch-stuck'].map((n) => join(root, n)));
    expect(shared.filter((e) => e.event === 'exit').map((e) => e.code)).toEqual([143, 143, 143]);
  });

  test('bad data and bad usage fail with exit 2 and an error event', async () => {
    const data = join(root, 'bad.jsonl');
    writeData(data, 5, 3);
    const bad = await trainer(['train', '--data', data, '--out', join(root, 'bad')]);
    expect(bad.code).toBe(2);
    expect(bad.events).toHaveLength(1);
    expect(bad.events[0]).toMatchObject({ event: 'error', retryable: false });
    expect(bad.events[0].message).toContain(`${data}:3:`);
    expect(existsSync(join(root, 'bad', '.fake-trainer.running'))).toBe(false);

    const usage = await trainer(['train', '--data', data]);
    expect(usage.code).toBe(2);
    expect(usage.events[0].message).toContain('--out');
  });
});
