import { join } from 'node:path';
import { AdapterNotLoaded } from '../errors';
import { ModelClient } from '../model/client';
import type { ArtifactRef } from '../schemas/artifacts';
import type { Endpoint } from '../schemas/config';
import { getDir } from '../store/manifest';
import type { StepEnv } from './env';
import { apiKey } from './policy';

/** Fails with AdapterNotLoaded unless the endpoint lists `name` (nothing to check for the base model). */
export async function requireAdapter(client: ModelClient, name: string, signal?: AbortSignal): Promise<void> {
  if (name === client.endpoint.name) return;
  if (!(await client.listModels(signal)).includes(name)) throw new AdapterNotLoaded(name);
}

/** An adapter's name on the endpoint: derived from its content, so "already loaded" means this very adapter. */
export function adapterName(adapter: ArtifactRef): string {
  return `slearn-${adapter.sha256.slice(0, 16)}`;
}

export interface StageInput {
  store: string;
  adapter: ArtifactRef;
  endpoint: Endpoint;
}

/**
 * Runs on the model server's host (task queue `slearn-model`): copies an adapter from the store
 * into the directory the server may load adapters from, and loads it through vLLM's runtime LoRA
 * route. No host path crosses the workflow: the adapter travels as a reference.
 */
export async function stageAdapter(env: StepEnv, { store: url, adapter, endpoint }: StageInput): Promise<{ name: string }> {
  const store = await env.store(url);
  const name = adapterName(adapter);
  const dir = join(env.adapterDir, name);
  await getDir(store, adapter, dir);
  const client = new ModelClient(endpoint, apiKey(env.policy, endpoint, env.env));
  if (!(await client.listModels(env.signal)).includes(name)) await client.loadAdapter(name, dir);
  return { name };
}
