import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';

/** The project root: dist/ and src/ both sit one level below it. */
export const PROJECT_ROOT = resolve(__dirname, '..');

export const VENV_BIN = join(PROJECT_ROOT, '.venv', 'bin');

/** The default state directory, relative to where slearn is run (like .git). */
export const STATE_DIR = resolve(process.env.SLEARN_HOME ?? '.slearn');

/**
 * The artifact store when a config names none, and the one `slearn models` reads: one state
 * directory for everything, so a fresh SLEARN_HOME starts a fresh registry too.
 */
export function defaultStore(env: NodeJS.ProcessEnv = process.env): string {
  return env.SLEARN_ARTIFACTS || join(STATE_DIR, 'artifacts');
}

/** The trainer: SLEARN_TRAINER (a JSON argv array), else the project's Python environment. */
export function trainerCommand(env: NodeJS.ProcessEnv = process.env): string[] {
  if (env.SLEARN_TRAINER) {
    const argv = JSON.parse(env.SLEARN_TRAINER);
    if (!Array.isArray(argv) || !argv.every((a) => typeof a === 'string')) throw new Error('SLEARN_TRAINER must be a JSON array of strings');
    return argv;
  }
  const py = join(VENV_BIN, 'python');
  return [existsSync(py) ? py : 'python3', '-m', 'slearn_trainer'];
}
