import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { STATE_DIR } from '../paths';

export const SERVER_STATE_FILE = join(STATE_DIR, 'server.json');

/** TEMPORAL_ADDRESS (an existing cluster), else the embedded server `slearn server` recorded, else the default port. */
export function temporalAddress(env: NodeJS.ProcessEnv = process.env): string {
  if (env.TEMPORAL_ADDRESS) return env.TEMPORAL_ADDRESS;
  if (existsSync(SERVER_STATE_FILE)) {
    try {
      const s = JSON.parse(readFileSync(SERVER_STATE_FILE, 'utf8'));
      if (typeof s.address === 'string') return s.address;
    } catch {
      /* a half-written file: fall through */
    }
  }
  return '127.0.0.1:7233';
}
