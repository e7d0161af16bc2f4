import { Registry } from '../registry/registry';
import type { Config } from '../schemas/config';
import type { RunRecord } from '../schemas/registry';
import type { ModelUse, StepCtx } from '../schemas/run';
import { fingerprint, once } from '../store/steps';
import { adapterName } from './adapters';
import type { StepEnv } from './env';
import { runConfig } from './step';

/** The model in service for a config, and whether a new run has anything to learn: the run's second step. */

export interface CurrentModel {
  current: ModelUse | null;
  /** Set when the data and the current model are what the last run saw: nothing to learn. */
  nothingNew?: string;
}

/**
 * What decides what a run learns: how the model is asked and graded, what is trained on and how.
 * Not where the endpoint is, its timeouts, concurrency or sharding: the demo's endpoint moves to a
 * free port on every start, and that is not a reason to train again.
 */
export function settingsSha(config: Config): string {
  const { samples, temperature, maxTokens, systemPrompt } = config.answer;
  const grader = config.grader.type === 'judge' ? { ...config.grader, model: config.grader.model?.name ?? null } : config.grader;
  return fingerprint(
    'settings',
    config.model.name,
    { samples, temperature, maxTokens, systemPrompt },
    grader,
    config.filter,
    config.train,
    config.split,
    config.eval ?? null,
  );
}

/**
 * The model a run left in service: the version it promoted, else the one it started from. "Nothing
 * new" compares this, not the model the run started from: a run that promoted version 1 left
 * version 1, and the next run on the same data would only repeat it.
 */
export function leftInService(r: Pick<RunRecord, 'outcome' | 'version' | 'currentVersion'>): number | null {
  return r.outcome === 'promoted' && r.version !== undefined ? r.version : r.currentVersion;
}

/** The model in service for this config (the registry's `current`), and whether anything changed since the last run. */
export async function resolveCurrent(env: StepEnv, { ctx, dataSha }: { ctx: StepCtx; dataSha: string }): Promise<CurrentModel> {
  const store = await env.store(ctx.store);
  const config = await runConfig(store, ctx);
  // Resolved once per run: a resumed run or a baseline sees the model the original run answered with.
  return once(
    store,
    ctx,
    'current',
    fingerprint('current', config.name),
    {},
    async () => {
      const reg = new Registry(store, config.name);
      const v = await reg.current();
      const current: ModelUse | null = v ? { label: 'current', name: adapterName(v.adapter), adapter: v.adapter, version: v.version } : null;
      // Compared with the last run that did the work: a nothing-new run only repeats what it saw.
      const last = (await reg.runs()).filter((r) => r.runId !== ctx.runId && r.outcome !== 'nothing-new').at(-1);
      const settings = settingsSha(config);
      const same = last && last.dataSha === dataSha && last.settingsSha === settings && leftInService(last) === (v?.version ?? null);
      const result: CurrentModel = {
        current,
        ...(same
          ? {
              nothingNew: `nothing new since run ${last.runId}: same data (${dataSha.slice(0, 12)}), the same settings and the same current model (${v ? `version ${v.version}` : 'the base'})`,
            }
          : {}),
      };
      return { outputs: {}, result };
    },
    env,
  );
}
