import OpenAI, { APIConnectionError, APIError } from 'openai';
import type { ChatCompletionCreateParamsNonStreaming, ChatCompletionMessageParam } from 'openai/resources/chat/completions';
import type { Endpoint } from '../schemas/config';

/**
 * How a failed model call is handled:
 *  - transient: rate limits, 5xx, timeouts, broken bodies; retry later (the SDK already retried, honouring Retry-After)
 *  - item:      the endpoint refused this one request (400/413/422); the item is reported, the run goes on
 *  - fatal:     the configuration is wrong (401/403/404); stop at once and say what to fix
 */
export type FailureKind = 'transient' | 'item' | 'fatal';

export class ModelCallError extends Error {
  constructor(
    message: string,
    readonly kind: FailureKind,
    readonly status?: number,
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
    this.name = 'ModelCallError';
  }
}

export function classifyError(err: unknown, endpoint: Pick<Endpoint, 'baseUrl' | 'name'>): ModelCallError {
  if (err instanceof ModelCallError) return err;
  if (err instanceof APIConnectionError) {
    return new ModelCallError(`cannot reach ${endpoint.baseUrl}: ${err.message}`, 'transient');
  }
  if (err instanceof APIError && err.status !== undefined) {
    const s = err.status;
    const retryAfter = Number(err.headers?.get?.('retry-after'));
    const detail = `${endpoint.baseUrl} answered ${s}: ${err.message}`;
    if (s === 429 || s === 408 || s === 409 || s >= 500) {
      return new ModelCallError(detail, 'transient', s, Number.isFinite(retryAfter) ? retryAfter : undefined);
    }
    if (s === 401 || s === 403) return new ModelCallError(`${detail} (check the key named by apiKeyEnv)`, 'fatal', s);
    if (s === 404) return new ModelCallError(`${detail} (check model.name "${endpoint.name}" and model.baseUrl)`, 'fatal', s);
    return new ModelCallError(detail, 'item', s);
  }
  // Truncated or garbled bodies surface as parse errors: the next try usually succeeds.
  return new ModelCallError(`call to ${endpoint.baseUrl} failed: ${(err as Error)?.message ?? String(err)}`, 'transient');
}

/** An endpoint may quote the key it refused ("Incorrect API key provided: sk-..."): never pass it on to history or logs. */
export function redactSecret(e: ModelCallError, secret: string | null | undefined): ModelCallError {
  if (!secret || secret.length < 4 || !e.message.includes(secret)) return e;
  return new ModelCallError(e.message.split(secret).join('[redacted]'), e.kind, e.status, e.retryAfterSeconds);
}

export interface ChatOptions {
  n?: number;
  temperature?: number;
  maxTokens?: number;
  seed?: number;
  responseFormat?: ChatCompletionCreateParamsNonStreaming['response_format'];
  model?: string;
  signal?: AbortSignal;
}

/** A thin layer over the `openai` package: the key comes from the variable the config names. */
export class ModelClient {
  readonly openai: OpenAI;

  constructor(
    readonly endpoint: Endpoint,
    env: NodeJS.ProcessEnv = process.env,
    maxRetries = 3,
  ) {
    const apiKey = endpoint.apiKeyEnv ? env[endpoint.apiKeyEnv] : undefined;
    if (endpoint.apiKeyEnv && !apiKey) {
      throw new ModelCallError(`environment variable ${endpoint.apiKeyEnv} (model.apiKeyEnv) is not set on this worker`, 'fatal');
    }
    this.openai = new OpenAI({
      baseURL: endpoint.baseUrl,
      apiKey: apiKey ?? 'no-key',
      timeout: endpoint.timeoutSeconds * 1000,
      maxRetries,
    });
  }

  /** Returns exactly `n` completions, asking again when an endpoint ignores `n` (Ollama, llama.cpp). */
  async chat(messages: ChatCompletionMessageParam[], opts: ChatOptions = {}): Promise<string[]> {
    const n = opts.n ?? 1;
    const out: string[] = [];
    try {
      while (out.length < n) {
        const res = await this.openai.chat.completions.create(
          {
            model: opts.model ?? this.endpoint.name,
            messages,
            n: n - out.length,
            temperature: opts.temperature ?? 0,
            max_tokens: opts.maxTokens,
            ...(opts.seed !== undefined ? { seed: opts.seed } : {}),
            ...(opts.responseFormat ? { response_format: opts.responseFormat } : {}),
          },
          { signal: opts.signal },
        );
        if (!Array.isArray(res?.choices) || res.choices.length === 0) throw new Error('response has no choices');
        for (const c of res.choices) out.push(c.message?.content ?? '');
      }
    } catch (err) {
      throw redactSecret(classifyError(err, this.endpoint), this.openai.apiKey);
    }
    return out.slice(0, n);
  }

  /** The root URL for vLLM's adapter routes, which sit beside /v1/chat/completions. */
  private adminUrl(path: string): string {
    return `${this.endpoint.baseUrl.replace(/\/+$/, '')}/${path}`;
  }

  private headers(): Record<string, string> {
    return { 'content-type': 'application/json', authorization: `Bearer ${this.openai.apiKey}` };
  }

  /** vLLM's dynamic LoRA loading; "already loaded" counts as success so retries stay idempotent. */
  async loadAdapter(name: string, path: string): Promise<void> {
    const res = await fetch(this.adminUrl('load_lora_adapter'), {
      method: 'POST',
      headers: this.headers(),
      body: JSON.stringify({ lora_name: name, lora_path: path }),
    }).catch((e) => {
      throw new ModelCallError(`cannot reach ${this.endpoint.baseUrl} to load adapter: ${e.message}`, 'transient');
    });
    if (res.ok) return;
    const text = await res.text();
    if (res.status === 400 && /already (been )?loaded/i.test(text)) return;
    const kind: FailureKind = res.status >= 500 || res.status === 429 ? 'transient' : 'fatal';
    throw redactSecret(new ModelCallError(`loading adapter ${name} from ${path} failed (${res.status}): ${text.slice(0, 500)}`, kind, res.status), this.openai.apiKey);
  }

  async listModels(signal?: AbortSignal): Promise<string[]> {
    try {
      const page = await this.openai.models.list({ signal, maxRetries: 0, timeout: 5000 });
      return page.data.map((m) => m.id);
    } catch (err) {
      throw redactSecret(classifyError(err, this.endpoint), this.openai.apiKey);
    }
  }
}
