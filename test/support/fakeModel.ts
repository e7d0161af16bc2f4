/**
 * A deterministic OpenAI-compatible model server for tests (node:http only).
 *
 * The fake "knows" a fixed set of QA items: the base model answers an item correctly iff
 * `stableHash(question) % 100 < knownPercent`, otherwise "I am not sure.". LoRA adapters loaded
 * through vLLM's `POST /v1/load_lora_adapter` read `<lora_path>/slearn-fake-adapter.json` (written
 * by test/support/fakeTrainer.js) and answer every question they were trained on.
 *
 * Chat requests with `response_format` json_schema / json_object (or whose last user message has
 * both a `Reference answer:` and a `Candidate answer:` line) are judge requests: the reply is a
 * verdict `{"score","correct","rationale"}` from normalised exact/containment matching.
 *
 * A FaultPlan injects failures into chat completions (only into requests that passed validation,
 * so 400/404 behaviour stays deterministic), drawn from a seeded PRNG in request order.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { join } from 'node:path';

export type FaultKind =
  | 'rate_limit' // 429 + Retry-After: 1
  | 'server_error' // 500
  | 'unavailable' // 503
  | 'reset' // socket.destroy() before responding
  | 'hang' // never answer; the socket stays open until close() (or the client gives up)
  | 'truncated' // 200 with a cut-off JSON body
  | 'judge_bad_schema'; // judge requests only: valid JSON outside the verdict schema

export interface FaultPlan {
  /** PRNG seed (default 1). Same seed + same request order = same faults. */
  seed?: number;
  /** Probability in [0, 1] that an eligible chat request gets a fault. */
  rate: number;
  /** Kinds to draw from, uniformly. 'judge_bad_schema' is only eligible for judge requests. */
  kinds: FaultKind[];
  /**
   * At most this many faults per request key (the question for answer requests, the whole judge
   * prompt for judge requests), so that a retried request eventually succeeds. Default Infinity
   * (no cap).
   */
  maxPerQuestion?: number;
}

export interface FakeModelOptions {
  items: { question: string; answer: string }[];
  /** Default 50: the base model answers correctly iff stableHash(question) % 100 < knownPercent. */
  knownPercent?: number;
  /** Default 'fake-model'. */
  modelName?: string;
  faults?: FaultPlan;
  /** Delay before every response (default 0). */
  latencyMs?: number;
}

export interface FakeModelStats {
  /** Every HTTP request received. */
  total: number;
  /** Every POST /v1/chat/completions (answer and judge, valid or not, faulted or not). */
  chat: number;
  /** Answer requests per question (every attempt, including faulted ones). */
  perQuestion: Map<string, number>;
  /** Faults injected, by kind. */
  faultsInjected: Record<string, number>;
  /** Judge requests (every attempt). */
  judge: number;
  /** Every distinct `Authorization` header received (so a test can see that a key was sent). */
  authorizations: Set<string>;
  /** Answer requests per model name (the base, or an adapter): which model a run asked. */
  perModel: Map<string, number>;
  /** Adapter loads, in order. */
  loads: string[];
}

export interface FakeModel {
  /** 'http://127.0.0.1:PORT/v1' */
  baseUrl: string;
  stats: FakeModelStats;
  /** Stops the server and destroys every open socket (including hung requests). */
  close(): Promise<void>;
}

export const NOT_SURE = 'I am not sure.';

/** FNV-1a, 32 bit, unsigned; over the UTF-8 bytes of `s`. */
export function stableHash(s: string): number {
  let h = 0x811c9dc5;
  for (const b of Buffer.from(s, 'utf8')) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** mulberry32: a tiny seeded PRNG returning floats in [0, 1). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ARTICLES = new Set(['a', 'an', 'the']);

/** Lower-case, punctuation and articles removed, whitespace collapsed. */
export function normaliseAnswer(s: string): string {
  return s
    .normalize('NFKC')
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s]/gu, ' ')
    .split(/\s+/)
    .filter((t) => t && !ARTICLES.has(t))
    .join(' ');
}

function matches(candidate: string, refs: string[]): boolean {
  const c = normaliseAnswer(candidate);
  if (!c) return false;
  return refs.some((r) => {
    const n = normaliseAnswer(r);
    return !!n && (c === n || ` ${c} `.includes(` ${n} `));
  });
}

interface Adapter {
  name: string;
  path: string;
  trained: Map<string, string>;
  /** Catastrophic forgetting (the fake trainer's answer to an absurd learning rate): knows only what it was trained on. */
  forgetsBase: boolean;
  created: number;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string,
    readonly param: string | null = null,
  ) {
    super(message);
  }
  body(): unknown {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.status } };
  }
}

function contentText(content: unknown): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content.map((p) => (p && typeof p === 'object' && typeof (p as { text?: unknown }).text === 'string' ? (p as { text: string }).text : '')).join('');
  }
  return '';
}

function words(s: string): number {
  return s.split(/\s+/).filter(Boolean).length;
}

export async function startFakeModel(opts: FakeModelOptions): Promise<FakeModel> {
  const modelName = opts.modelName ?? 'fake-model';
  const knownPercent = opts.knownPercent ?? 50;
  const latencyMs = opts.latencyMs ?? 0;
  const world = new Map<string, string>();
  for (const it of opts.items) if (!world.has(it.question.trim())) world.set(it.question.trim(), it.answer);
  const adapters = new Map<string, Adapter>();
  const created = Math.floor(Date.now() / 1000);

  const plan = opts.faults;
  const rand = prng(plan?.seed ?? 1);
  const faultsPerKey = new Map<string, number>();

  const stats: FakeModelStats = {
    total: 0,
    chat: 0,
    perQuestion: new Map(),
    faultsInjected: {},
    judge: 0,
    authorizations: new Set(),
    perModel: new Map(),
    loads: [],
  };
  const sockets = new Set<Socket>();
  let seq = 0;

  /** The item a user message asks about: exact (trimmed) match, else the longest item question it contains. */
  function findQuestion(content: string): string | undefined {
    const q = content.trim();
    if (world.has(q)) return q;
    let best: string | undefined;
    for (const k of world.keys()) if (k && q.includes(k) && (!best || k.length > best.length)) best = k;
    return best;
  }

  function baseKnows(q: string): boolean {
    return stableHash(q) % 100 < knownPercent;
  }

  function answerFor(model: string, content: string): { key: string; text: string } {
    const q = findQuestion(content);
    if (q === undefined) return { key: content.trim(), text: NOT_SURE };
    const adapter = model === modelName ? undefined : adapters.get(model);
    const trained = adapter?.trained.get(q);
    if (trained !== undefined) return { key: q, text: trained };
    if (adapter?.forgetsBase) return { key: q, text: NOT_SURE };
    return { key: q, text: baseKnows(q) ? world.get(q)! : NOT_SURE };
  }

  function judgeVerdict(content: string): string {
    const line = (label: string) => content.match(new RegExp(`^\\s*${label}:[ \\t]*(.*)$`, 'mi'))?.[1]?.trim();
    const reference = line('Reference answer') ?? '';
    const aliases = (line('Accepted aliases') ?? '')
      .split(';')
      .map((a) => a.trim())
      .filter(Boolean);
    const candidate = line('Candidate answer') ?? '';
    const correct = matches(candidate, [reference, ...aliases]);
    return JSON.stringify({
      score: correct ? 1 : 0,
      correct,
      rationale: correct ? 'The candidate states the reference answer.' : 'The candidate does not state the reference answer.',
    });
  }

  /** Draws (always two numbers, so the sequence depends only on request order) and applies the cap. */
  function drawFault(key: string, isJudge: boolean): FaultKind | undefined {
    if (!plan) return undefined;
    const r1 = rand();
    const r2 = rand();
    const eligible = plan.kinds.filter((k) => k !== 'judge_bad_schema' || isJudge);
    if (!eligible.length || r1 >= plan.rate) return undefined;
    const cap = plan.maxPerQuestion ?? Infinity;
    const used = faultsPerKey.get(key) ?? 0;
    if (used >= cap) return undefined;
    faultsPerKey.set(key, used + 1);
    // Half a judge request's faults are the judge's own (off-schema verdicts): judge requests are few,
    // and drawn uniformly among seven kinds a run could see none (the draw follows request order).
    const judgeFault = isJudge && eligible.includes('judge_bad_schema');
    const uniform = (u: number) => eligible[Math.min(eligible.length - 1, Math.floor(u * eligible.length))];
    const kind = !judgeFault ? uniform(r2) : r2 < 0.5 ? 'judge_bad_schema' : uniform((r2 - 0.5) * 2);
    stats.faultsInjected[kind] = (stats.faultsInjected[kind] ?? 0) + 1;
    return kind;
  }

  function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
    res.end(text);
  }

  function sendText(res: ServerResponse, status: number, text: string): void {
    res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }

  async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks).toString('utf8');
    let body: unknown;
    try {
      body = raw ? JSON.parse(raw) : undefined;
    } catch {
      throw new HttpError(400, 'request body is not valid JSON', 'BadRequestError');
    }
    if (!body || typeof body !== 'object' || Array.isArray(body)) throw new HttpError(400, 'request body must be a JSON object', 'BadRequestError');
    return body as Record<string, unknown>;
  }

  function modelList(): unknown {
    return {
      object: 'list',
      data: [
        { id: modelName, object: 'model', created, owned_by: 'slearn-fake', root: modelName, parent: null },
        ...[...adapters.values()].map((a) => ({ id: a.name, object: 'model', created: a.created, owned_by: 'slearn-fake', root: a.path, parent: modelName })),
      ],
    };
  }

  async function chat(req: IncomingMessage, res: ServerResponse): Promise<void> {
    stats.chat++;
    const body = await readJson(req);
    const messages = body.messages;
    if (!Array.isArray(messages) || messages.length === 0) {
      throw new HttpError(400, "'messages' is required and must be a non-empty array", 'BadRequestError', 'messages');
    }
    const model = body.model;
    if (typeof model !== 'string' || (model !== modelName && !adapters.has(model))) {
      throw new HttpError(404, `The model \`${String(model)}\` does not exist.`, 'NotFoundError');
    }
    const n = body.n ?? 1;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 128) {
      throw new HttpError(400, "'n' must be an integer from 1 to 128", 'BadRequestError', 'n');
    }
    const users = messages.filter((m) => m && typeof m === 'object' && (m as { role?: unknown }).role === 'user');
    if (!users.length) throw new HttpError(400, 'messages must contain a user message', 'BadRequestError', 'messages');
    const last = contentText((users[users.length - 1] as { content?: unknown }).content);

    const rf = body.response_format as { type?: unknown } | undefined;
    const isJudge =
      (!!rf && (rf.type === 'json_schema' || rf.type === 'json_object')) || (/^\s*Reference answer:/im.test(last) && /^\s*Candidate answer:/im.test(last));

    let key: string;
    let content: string;
    if (isJudge) {
      stats.judge++;
      key = `judge:${last}`;
      content = judgeVerdict(last);
    } else {
      const a = answerFor(model, last);
      key = a.key;
      content = a.text;
      stats.perQuestion.set(key, (stats.perQuestion.get(key) ?? 0) + 1);
      stats.perModel.set(model, (stats.perModel.get(model) ?? 0) + 1);
    }

    const fault = drawFault(key, isJudge);
    switch (fault) {
      case 'rate_limit':
        return sendJson(
          res,
          429,
          { error: { message: 'Rate limit reached, retry after 1s', type: 'rate_limit_error', param: null, code: 429 } },
          { 'retry-after': '1' },
        );
      case 'server_error':
        return sendJson(res, 500, { error: { message: 'Internal server error (injected)', type: 'InternalServerError', param: null, code: 500 } });
      case 'unavailable':
        return sendJson(res, 503, { error: { message: 'Service unavailable (injected)', type: 'ServiceUnavailableError', param: null, code: 503 } });
      case 'reset':
        req.socket.destroy();
        return;
      case 'hang':
        return; // the socket stays open; close() destroys it
      case 'judge_bad_schema':
        content = JSON.stringify({ verdict: 'maybe' });
        break;
      default:
        break;
    }

    const promptTokens = messages.reduce((s: number, m) => s + words(contentText((m as { content?: unknown })?.content)), 0);
    const completionTokens = words(content) * n;
    const response = {
      id: `chatcmpl-fake-${++seq}`,
      object: 'chat.completion',
      created: Math.floor(Date.now() / 1000),
      model,
      choices: Array.from({ length: n }, (_, index) => ({
        index,
        message: { role: 'assistant', content, refusal: null },
        logprobs: null,
        finish_reason: 'stop',
      })),
      usage: { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens },
    };
    if (fault === 'truncated') {
      const text = JSON.stringify(response);
      const cut = text.slice(0, Math.max(1, Math.floor(text.length / 2)));
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(cut) });
      res.end(cut);
      return;
    }
    sendJson(res, 200, response);
  }

  async function loadAdapter(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readJson(req);
    const name = body.lora_name;
    const path = body.lora_path;
    if (typeof name !== 'string' || !name || typeof path !== 'string' || !path) {
      throw new HttpError(400, "'lora_name' and 'lora_path' are required strings", 'BadRequestError');
    }
    if (adapters.has(name) || name === modelName) {
      // vLLM's wording; ModelClient treats it as success (idempotent retries).
      throw new HttpError(400, `The lora adapter '${name}' has already been loaded.`, 'InvalidUserInput', 'lora_name');
    }
    const file = join(path, 'slearn-fake-adapter.json');
    let trained: Map<string, string>;
    let forgetsBase: boolean;
    try {
      // A real PEFT adapter (from the real trainer, as in the chaos test): the fake cannot read its
      // weights, so it answers as the base does. Runs compared with each other stay comparable.
      if (!existsSync(file) && existsSync(join(path, 'adapter_config.json'))) {
        stats.loads.push(name);
        adapters.set(name, { name, path, trained: new Map(), forgetsBase: false, created: Math.floor(Date.now() / 1000) });
        return sendText(res, 200, `Success: LoRA adapter '${name}' added successfully.`);
      }
      const parsed = JSON.parse(readFileSync(file, 'utf8')) as { trained?: { question: string; answer: string }[]; forgetsBase?: boolean };
      if (!Array.isArray(parsed.trained)) throw new Error('"trained" must be an array');
      trained = new Map(parsed.trained.map((t) => [String(t.question).trim(), String(t.answer)]));
      forgetsBase = parsed.forgetsBase === true;
    } catch (e) {
      throw new HttpError(400, `Loading lora adapter '${name}' failed: cannot read ${file}: ${(e as Error).message}`, 'BadRequestError', 'lora_path');
    }
    stats.loads.push(name);
    adapters.set(name, { name, path, trained, forgetsBase, created: Math.floor(Date.now() / 1000) });
    sendText(res, 200, `Success: LoRA adapter '${name}' added successfully.`);
  }

  async function unloadAdapter(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readJson(req);
    const name = body.lora_name;
    if (typeof name !== 'string' || !name) throw new HttpError(400, "'lora_name' is required", 'BadRequestError', 'lora_name');
    if (!adapters.delete(name)) throw new HttpError(404, `The lora adapter '${name}' cannot be found.`, 'NotFoundError', 'lora_name');
    sendText(res, 200, `Success: LoRA adapter '${name}' removed successfully.`);
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    stats.total++;
    if (req.headers.authorization) stats.authorizations.add(req.headers.authorization);
    if (latencyMs > 0) await new Promise((r) => setTimeout(r, latencyMs));
    const path = (req.url ?? '/').split('?')[0].replace(/\/+$/, '') || '/';
    const method = req.method ?? 'GET';
    try {
      if (method === 'GET' && path === '/health') return sendText(res, 200, 'ok');
      if (method === 'GET' && path === '/v1/models') return sendJson(res, 200, modelList());
      if (method === 'POST' && path === '/v1/chat/completions') return await chat(req, res);
      if (method === 'POST' && path === '/v1/load_lora_adapter') return await loadAdapter(req, res);
      if (method === 'POST' && path === '/v1/unload_lora_adapter') return await unloadAdapter(req, res);
      throw new HttpError(404, `no route for ${method} ${path}`, 'NotFoundError');
    } catch (e) {
      if (res.headersSent || res.destroyed) return;
      if (e instanceof HttpError) return sendJson(res, e.status, e.body());
      sendJson(res, 500, { error: { message: `fake model failed: ${(e as Error).message}`, type: 'InternalServerError', param: null, code: 500 } });
    }
  }

  const server = createServer((req, res) => void handle(req, res));
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  let closing: Promise<void> | undefined;
  return {
    baseUrl: `http://127.0.0.1:${port}/v1`,
    stats,
    close: () =>
      (closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
        server.closeAllConnections?.();
      })),
  };
}
