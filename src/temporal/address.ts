import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadClientConnectConfig } from '@temporalio/envconfig';
import type { NativeConnectionOptions } from '@temporalio/worker';
import { STATE_DIR } from '../paths';

export const SERVER_STATE_FILE = join(STATE_DIR, 'server.json');

export interface TemporalTarget {
  address: string;
  namespace: string;
  /** TLS, API key and gRPC metadata of a profile (Temporal Cloud, a secured cluster). */
  connection: NativeConnectionOptions;
}

/**
 * Where Temporal is: the standard client configuration (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
 * TEMPORAL_API_KEY, TEMPORAL_TLS_*, TEMPORAL_PROFILE and the TOML config file, through
 * @temporalio/envconfig, as the `temporal` CLI reads them); else the embedded server that
 * `slearn server` recorded; else the default local port.
 */
export function temporalTarget(env: NodeJS.ProcessEnv = process.env): TemporalTarget {
  let connection: NativeConnectionOptions = {};
  let namespace: string | undefined;
  try {
    const cfg = loadClientConnectConfig({ overrideEnvVars: env as Record<string, string>, ...(env.TEMPORAL_PROFILE ? { profile: env.TEMPORAL_PROFILE } : {}) });
    connection = cfg.connectionOptions;
    namespace = cfg.namespace;
  } catch (e) {
    if (env.TEMPORAL_PROFILE || env.TEMPORAL_CONFIG_FILE)
      throw new Error(`cannot read the Temporal client configuration: ${(e as Error).message}`, { cause: e });
  }
  let address = connection.address;
  if (!address && existsSync(SERVER_STATE_FILE)) {
    try {
      const s = JSON.parse(readFileSync(SERVER_STATE_FILE, 'utf8'));
      if (typeof s.address === 'string') address = s.address;
    } catch {
      /* a half-written file: fall through */
    }
  }
  address ??= '127.0.0.1:7233';
  return { address, namespace: namespace ?? env.TEMPORAL_NAMESPACE ?? 'default', connection: { ...connection, address } };
}

/** A connection failure that says where and what to do, instead of "Failed to connect before the deadline". */
export function unreachable(t: Pick<TemporalTarget, 'address' | 'namespace'>, e: unknown): Error {
  return new Error(
    `cannot reach Temporal at ${t.address} (namespace ${t.namespace}): ${(e as Error)?.message ?? e}. ` +
      'Start the embedded server with `slearn server` (or `make demo`), or point TEMPORAL_ADDRESS / TEMPORAL_PROFILE at your cluster.',
  );
}
