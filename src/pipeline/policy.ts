import { isAbsolute, relative, resolve } from 'node:path';
import { PolicyError } from '../errors';
import type { Config, Endpoint } from '../schemas/config';

/**
 * What a worker allows a workflow's input to make it do. Anyone who can start a workflow on the
 * namespace writes that input, so the worker decides on its own (from its environment, never from
 * the input) which endpoints it may call, which variables it may send as keys, and which files and
 * stores it may touch. The CLI's validation is a courtesy; this is the check that holds.
 */
export interface WorkerPolicy {
  /** URL prefixes an endpoint's baseUrl must start with ('*' allows any). */
  endpoints: string[];
  /** Environment variables that may be sent as API keys. */
  keyEnvs: string[];
  /** Directories below which config files, datasets and local stores may be. */
  paths: string[];
  /** Store URL prefixes (file:// or s3://) a run may use. */
  stores: string[];
}

/**
 * Never sendable as a key and never passed to a trainer or model server, whatever the policy says:
 * they protect the worker itself (its payload keys, codec token, cloud credentials, Temporal settings).
 */
export const PROTECTED_ENV = /^(SLEARN_PAYLOAD_(OLD_)?KEYS?|SLEARN_CODEC_TOKEN|AWS_.*|TEMPORAL_.*)$/;

const LOOPBACK = ['http://127.0.0.1:', 'http://localhost:', 'http://[::1]:', 'http://127.0.0.1/', 'http://localhost/'];

const list = (v: string | undefined) =>
  (v ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

/**
 * The policy from the worker's environment. Defaults are safe for one machine: loopback endpoints,
 * the conventional key variables, files under the working directory and the state directory.
 */
export function policyFromEnv(env: NodeJS.ProcessEnv, defaults: { stateDir: string; cwd?: string }): WorkerPolicy {
  const cwd = defaults.cwd ?? process.cwd();
  const paths = list(env.SLEARN_ALLOWED_PATHS).map((p) => resolve(cwd, p));
  return {
    endpoints: list(env.SLEARN_ALLOWED_ENDPOINTS).length ? list(env.SLEARN_ALLOWED_ENDPOINTS) : LOOPBACK,
    keyEnvs: ['SLEARN_API_KEY', 'OPENAI_API_KEY', ...list(env.SLEARN_ALLOWED_KEY_ENVS)],
    paths: paths.length ? paths : [cwd, resolve(defaults.stateDir)],
    stores: list(env.SLEARN_ALLOWED_STORES),
  };
}

function under(dir: string, p: string): boolean {
  const rel = relative(resolve(dir), resolve(p));
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}

export function checkPath(policy: WorkerPolicy, p: string, what: string): void {
  if (!policy.paths.some((d) => under(d, p))) {
    throw new PolicyError(`${what} ${p} is outside the directories this worker may read (${policy.paths.join(', ')}): set SLEARN_ALLOWED_PATHS on the worker`);
  }
}

export function checkEndpoint(policy: WorkerPolicy, ep: Endpoint, field: string): void {
  if (!policy.endpoints.includes('*') && !policy.endpoints.some((p) => ep.baseUrl.startsWith(p))) {
    throw new PolicyError(
      `${field}.baseUrl ${ep.baseUrl} is not an endpoint this worker may call: add its URL prefix to SLEARN_ALLOWED_ENDPOINTS on the worker`,
    );
  }
  if (ep.apiKeyEnv && (PROTECTED_ENV.test(ep.apiKeyEnv) || !policy.keyEnvs.includes(ep.apiKeyEnv))) {
    throw new PolicyError(
      `${field}.apiKeyEnv ${ep.apiKeyEnv} is not a variable this worker sends as a key: use SLEARN_API_KEY, or list it in SLEARN_ALLOWED_KEY_ENVS on the worker`,
    );
  }
}

export function checkStore(policy: WorkerPolicy, url: string): void {
  if (url.startsWith('file://')) {
    const path = decodeURIComponent(new URL(url).pathname);
    if (policy.stores.some((s) => url.startsWith(s))) return;
    checkPath(policy, path, 'artifact store');
    return;
  }
  if (!policy.stores.some((s) => s === '*' || url.startsWith(s))) {
    throw new PolicyError(`artifact store ${url} is not one this worker may use: add it to SLEARN_ALLOWED_STORES on the worker`);
  }
}

/** Every endpoint, key variable and file a config makes the worker touch. */
export function checkConfig(policy: WorkerPolicy, config: Config, configFile: string): void {
  checkPath(policy, configFile, 'config file');
  checkPath(policy, config.dataset, 'dataset');
  if (config.eval) checkPath(policy, config.eval, 'eval file');
  if (config.train.chatTemplate) checkPath(policy, config.train.chatTemplate, 'train.chatTemplate');
  checkEndpoint(policy, config.model, 'model');
  if (config.grader.type === 'judge' && config.grader.model) checkEndpoint(policy, config.grader.model, 'grader.model');
}

/** The key for an endpoint, read only after the policy allowed its variable. */
export function apiKey(policy: WorkerPolicy, ep: Endpoint, env: NodeJS.ProcessEnv, field = 'model'): string | undefined {
  checkEndpoint(policy, ep, field);
  if (!ep.apiKeyEnv) return undefined;
  const v = env[ep.apiKeyEnv];
  if (!v) throw new PolicyError(`environment variable ${ep.apiKeyEnv} (${field}.apiKeyEnv) is not set on this worker`);
  return v;
}
