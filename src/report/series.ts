import type { Level } from '../schemas/config';
import type { ModelUse } from '../schemas/run';
import type { Decision, DecisionRecord, EvalItemResult } from '../schemas/results';
import { LEVEL_ORDER } from './format';

export type Point = { step: number; loss: number };
export type ModelLabel = ModelUse['label'];
export const MODEL_ORDER: readonly ModelLabel[] = ['base', 'current', 'tuned'];

/** Trailing mean over `window` points: per-step losses are noisy at small batch sizes, the mean shows the trend. */
export function movingAverage(points: Point[], window: number): Point[] {
  const w = Math.max(1, Math.floor(window));
  let sum = 0;
  return points.map((p, i) => {
    sum += p.loss;
    if (i >= w) sum -= points[i - w].loss;
    return { step: p.step, loss: sum / Math.min(i + 1, w) };
  });
}

/** At most `max` points, each the mean of a run of consecutive ones: a 48-hour training logs far more steps than a chart has pixels. */
export function thin(points: Point[], max: number): Point[] {
  if (points.length <= max) return points;
  const k = Math.ceil(points.length / max);
  const out: Point[] = [];
  for (let i = 0; i < points.length; i += k) {
    const run = points.slice(i, i + k);
    out.push({ step: run[run.length - 1].step, loss: run.reduce((a, p) => a + p.loss, 0) / run.length });
  }
  return out;
}

/** Smallest and largest of many numbers (spreading them into Math.min overflows the stack past ~100,000). */
export function extent(values: number[]): [number, number] {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return [lo, hi];
}

/** About a twentieth of the curve, so 200 steps smooth over 10 and 20 steps are barely touched. */
export const smoothingWindow = (n: number) => Math.max(1, Math.min(50, Math.round(n / 20)));

/** Losses that can be drawn: a trainer may log a step without one. */
export const finiteLosses = (points: Point[]) => points.filter((p) => Number.isFinite(p.step) && Number.isFinite(p.loss));

/** The models that answered at least one of these items, in the order base, current, tuned. */
export const modelsIn = (results: EvalItemResult[]): ModelLabel[] => MODEL_ORDER.filter((m) => results.some((r) => r.answers[m]));

/** How a meta value reads as a group name. */
export function metaValue(v: unknown): string {
  if (v === undefined || v === null || v === '') return '(none)';
  return typeof v === 'string' ? v : JSON.stringify(v);
}

export interface MetaGroup {
  value: string;
  items: number;
  /** Per model: graded answers and right ones (ungradeable answers count in neither). */
  models: Partial<Record<ModelLabel, { correct: number; graded: number }>>;
}

export interface MetaBreakdown {
  key: string;
  groups: MetaGroup[];
}

/**
 * Accuracy per value of each meta field that splits the items into a few groups: a key with
 * one value says nothing, and one with a value per item (an id, a source URL) is no grouping.
 */
export function groupByMeta(results: EvalItemResult[], maxValues = 20): MetaBreakdown[] {
  const keys = [...new Set(results.flatMap((r) => Object.keys(r.meta ?? {})))].sort();
  const models = modelsIn(results);
  const out: MetaBreakdown[] = [];
  for (const key of keys) {
    const groups = new Map<string, MetaGroup>();
    for (const r of results) {
      const value = metaValue(r.meta?.[key]);
      let g = groups.get(value);
      if (!g) groups.set(value, (g = { value, items: 0, models: {} }));
      g.items++;
      for (const m of models) {
        const a = r.answers[m];
        if (!a || a.status !== 'graded') continue;
        const t = (g.models[m] ??= { correct: 0, graded: 0 });
        t.graded++;
        if (a.correct) t.correct++;
      }
    }
    if (groups.size < 2 || groups.size > maxValues || groups.size >= results.length) continue;
    const sorted = [...groups.values()].sort((a, b) => a.value.localeCompare(b.value, 'en', { numeric: true }));
    out.push({ key, groups: sorted });
  }
  return out;
}

export const DECISION_ORDER: readonly Decision[] = ['kept', 'replayed', 'dropped', 'ungradeable'];

export interface LevelRow {
  /** A knowledge level, or 'ungraded' for items that never got one. */
  level: Level | 'ungraded';
  total: number;
  decisions: Record<Decision, number>;
}

/** What the filter did at each knowledge level: the training data, level by level. */
export function decisionsByLevel(decisions: DecisionRecord[]): LevelRow[] {
  const rows = new Map<LevelRow['level'], LevelRow>();
  for (const level of [...LEVEL_ORDER, 'ungraded' as const])
    rows.set(level, { level, total: 0, decisions: { kept: 0, replayed: 0, dropped: 0, ungradeable: 0 } });
  for (const d of decisions) {
    const row = rows.get(d.level ?? 'ungraded')!;
    row.total++;
    row.decisions[d.decision]++;
  }
  return [...rows.values()].filter((r) => r.total > 0);
}

/** Occurrences of each value, in first-seen order. */
export function tally<T extends string>(values: T[]): Map<T, number> {
  const m = new Map<T, number>();
  for (const v of values) m.set(v, (m.get(v) ?? 0) + 1);
  return m;
}
