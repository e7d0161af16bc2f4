import type { DecisionRecord, EvalItemResult } from '../schemas/results';
import type { EvalResult, ModelUse, RunResult } from '../schemas/run';

/** Everything a run's report shows. Built by the report step from the run's results in the store. */
export interface ReportData extends Pick<RunResult, 'runId' | 'counts' | 'levels' | 'filter' | 'train' | 'evaluation' | 'promotion'> {
  /** The config's name (the registry entry). */
  name: string;
  /** The model in service the run started from (a chained run), if any. */
  current?: ModelUse;
  /** Notices from reading the data (e.g. extra fields kept as meta). */
  notices: string[];
  /** Why the run ended early ("nothing new"), if it did. */
  reason?: string;
  losses: { step: number; loss: number }[];
  /** Held-out items with each model's answer (at most REPORT_ITEMS of them). */
  results: EvalItemResult[];
  /** The filter's decision per training item (at most REPORT_ITEMS of them). */
  decisions: DecisionRecord[];
}

/** A side-by-side comparison of self-learning with baselines (`slearn run --compare`, `slearn demo --compare`). */
export interface ComparisonData {
  title: string;
  rows: {
    label: string;
    runId: string;
    trainedItems: number;
    steps: number;
    trainSeconds: number;
    tuned?: EvalResult['tuned'];
    retention?: EvalResult['retention'];
    /** Paired against self-learning on the same held-out items. */
    vsSelf?: { fixed: number; broken: number; pValue: number };
  }[];
  base: EvalResult['base'];
  items: number;
}
