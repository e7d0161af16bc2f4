import { openStore } from '../../src/store/open';
import type { StepEnv } from '../../src/pipeline/env';
import { FAKE_TRAINER, tempDir, testPolicy } from './stack';

/** A pipeline step's environment without Temporal: what an activity would give it, for steps called directly. */
export function stepEnv(over: Partial<StepEnv> & { progressLog?: unknown[] } = {}): StepEnv {
  const { progressLog, ...rest } = over;
  return {
    store: openStore,
    signal: new AbortController().signal,
    attempt: 1,
    giveUp: false,
    progress: (d) => progressLog?.push(d),
    policy: testPolicy(),
    env: { ...process.env, SLEARN_TRAINER_ENV: 'FAKE_TRAINER_*' },
    scratch: tempDir('slearn-scratch-'),
    trainer: FAKE_TRAINER,
    adapterDir: tempDir('slearn-adapters-'),
    leaseTtlMs: 10_000,
    label: 'test',
    // Steps called directly speak only when something is wrong, as the in-process workers of the tests do.
    log: { info: () => undefined, warn: (message, fields) => console.warn(message, fields ?? {}) },
    ...rest,
  };
}
