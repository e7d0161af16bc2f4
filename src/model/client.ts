import OpenAI, { APIConnectionError, APIConnectionTimeoutError, APIError } from 'openai';
import type { ChatCompletionCreateParamsNonStreaming, ChatCompletionMessageParam } from 'openai/resources/chat/completions';
import { ModelCallError } from '../errors';
import type { Endpoint } from '../schemas/config';

/** Retry-After as seconds (RFC 9110 allows a number of seconds or an HTTP date), or the retry-after-ms extension. */
export function retryAfterSeconds(headers: { get(name: string): string | null } | undefined, now = Date.now()): number | undefined {
  const ms = Number(headers?.get('retry-after-ms'));
  if (Number.isFinite(ms) && ms > 0) return ms / 1000;
  const v = headers?.get('retry-after');
  if (!v) return undefined;
  const s = Number(v);
  if (Number.isFinite(s)) return Math.max(0, s);
  const at = Date.parse(v);
  return Number.isFinite(at) ? Math.max(0, (at - now) / 1000) : undefined;
}

/** Any failure of a call to `endpoint` as a ModelCallError, its status sorted by `ModelCallError.fromStatus`. */
export function classifyError(err: unknown, endpoint: Pick<Endpoint, 'baseUrl' | 'name'>): ModelCallError {
  if (err instanceof ModelCallError) return err;
  if (err instanceof APIConnectionTimeoutError)
    return new ModelCallError(`${endpoint.baseUrl} did not answer in time`, 'transient', undefined, undefined, true);
  if (err instanceof APIConnectionError) return new ModelCallError(`cannot reach ${endpoint.baseUrl}: ${err.message}`, 'transient');
  if (err instanceof APIError && err.status !== undefined) {
    return ModelCallError.fromStatus(err.status, `${endpoint.baseUrl} answered ${err.status}: ${err.message}`, {
      retryAfterSeconds: retryAfterSeconds(err.headers as Headers | undefined),
      hints: { 401: 'check the key named by apiKeyEnv', 403: 'check the key named by apiKeyEnv', 404: `check model.name "${endpoint.name}" and model.baseUrl` },
    });
  }
  // Truncated or garbled bodies surface as parse errors: the next try usually succeeds.
  return new ModelCallError(`call to ${endpoint.baseUrl} failed: ${(err as Error)?.message ?? String(err)}`, 'transient');
}

/** An endpoint may quote the key it refused ("Incorrect API key provided: sk-..."): never pass it on to history or logs. */
export function redactSecret(e: ModelCallError, secret: string | null | undefined): ModelCallError {
  if (!secret || secret.length < 4 || !e.message.includes(secret)) return e;
  return e.redacted(secret);
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

/**
 * A thin layer over the `openai` package. The key is passed in by the caller (read from the
 * variable the config names, after the worker's policy allowed it). The SDK's own retries are off:
 * the caller retries each failed item itself, so that overload lowers the concurrency and a failed
 * request never costs its finished neighbours.
 */
export class ModelClient {
  readonly openai: OpenAI;

  constructor(
    readonly endpoint: Endpoint,
    apiKey?: string,
  ) {
    this.openai = new OpenAI({
      baseURL: endpoint.baseUrl,
      apiKey: apiKey ?? 'no-key',
      timeout: endpoint.timeoutSeconds * 1000,
      maxRetries: 0,
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

  private async admin(path: string, body: unknown, what: string): Promise<{ ok: boolean; status: number; text: string }> {
    const res = await fetch(this.adminUrl(path), {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${this.openai.apiKey}` },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(this.endpoint.timeoutSeconds * 1000),
    }).catch((e: Error) => {
      throw new ModelCallError(`cannot reach ${this.endpoint.baseUrl} to ${what}: ${e.message}`, 'transient');
    });
    return { ok: res.ok, status: res.status, text: res.ok ? '' : (await res.text()).slice(0, 500) };
  }

  /**
   * vLLM's runtime LoRA loading. Adapter names carry the adapter's hash, so "already loaded"
   * means this very adapter is there: success, which keeps retries idempotent.
   */
  async loadAdapter(name: string, path: string): Promise<void> {
    const r = await this.admin('load_lora_adapter', { lora_name: name, lora_path: path }, 'load an adapter');
    if (r.ok || (r.status === 400 && /already (been )?loaded/i.test(r.text))) return;
    const failed = ModelCallError.fromStatus(r.status, `loading adapter ${name} failed (${r.status}): ${r.text}`, {
      admin: true,
      hints: { 404: 'is runtime LoRA loading enabled? vLLM needs --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True' },
    });
    throw redactSecret(failed, this.openai.apiKey);
  }

  async unloadAdapter(name: string): Promise<void> {
    const r = await this.admin('unload_lora_adapter', { lora_name: name }, 'unload an adapter');
    if (r.ok || r.status === 404) return;
    throw redactSecret(ModelCallError.fromStatus(r.status, `unloading adapter ${name} failed (${r.status}): ${r.text}`, { admin: true }), this.openai.apiKey);
  }

  async listModels(signal?: AbortSignal): Promise<string[]> {
    try {
      const page = await this.openai.models.list({ signal, timeout: 5000 });
      return page.data.map((m) => m.id);
    } catch (err) {
      throw redactSecret(classifyError(err, this.endpoint), this.openai.apiKey);
    }
  }
}
