import { pct } from '../metrics';
import type { Accuracy } from '../schemas/run';
import type { TrainRuntime } from '../schemas/trainer';
import type { ReportData } from './data';
import { bytes, count, duration, interval, points, pValue } from './format';
import { finiteLosses, movingAverage, smoothingWindow } from './series';

/**
 * The sentences a run report says, as plain text: the markdown prints them, the HTML page
 * escapes them. Written once so the terminal and the browser never disagree.
 */

export type Tone = 'good' | 'bad' | 'neutral';

export interface Outcome {
  tone: Tone;
  badge: string;
  headline: string;
  reason?: string;
}

export function outcome(d: ReportData): Outcome {
  const p = d.promotion;
  if (p?.promoted)
    return {
      tone: 'good',
      badge: 'promoted',
      headline: `Promoted${p.version ? ` as version ${p.version}` : ''}: the tuned model is now the one in service.`,
      reason: p.reason,
    };
  if (d.reason && !d.evaluation?.tuned) return { tone: 'neutral', badge: 'nothing new', headline: 'Ended early: nothing new to learn.', reason: d.reason };
  if (d.train?.skipped)
    return { tone: 'neutral', badge: 'no training', headline: 'No training: the model already knew every item.', ...(p ? { reason: p.reason } : {}) };
  // Only the gate measures a gain: a decision without one (a baseline run) was never up for promotion.
  if (p && (p.gain === undefined || !d.evaluation?.tuned)) return { tone: 'neutral', badge: 'not promoted', headline: 'Not promoted.', reason: p.reason };
  if (p)
    return {
      tone: 'bad',
      badge: 'refused',
      headline: `Refused by the promotion gate${p.version ? ` (recorded as version ${p.version})` : ''}: the model in service stays.`,
      reason: p.reason,
    };
  if (d.reason) return { tone: 'neutral', badge: 'ended early', headline: 'Ended early.', reason: d.reason };
  return { tone: 'neutral', badge: 'no decision', headline: 'No promotion decision was recorded for this run.' };
}

export function startedFrom(d: ReportData): string | undefined {
  if (d.current) {
    const continued = d.train && !d.train.skipped ? ' It answered the questions, and tuning continued its adapter.' : '';
    return `Started from the model in service${d.current.version ? `, version ${d.current.version}` : ''} (${d.current.name}).${continued}`;
  }
  if (d.filter || d.evaluation) return 'Started from the base model (no version in service).';
  return undefined;
}

export function answeredLine(d: ReportData): string {
  const c = d.counts;
  const parts = [`${count(c.items)} items`];
  if (c.answered !== c.items) parts.push(`${count(c.answered)} answered`);
  parts.push(`${count(c.graded)} graded`);
  if (c.ungradeable) parts.push(`${count(c.ungradeable)} ungradeable (neither right nor wrong)`);
  return `${parts.join(', ')}.`;
}

export function trainedOnLine(d: ReportData): string | undefined {
  const f = d.filter;
  if (!f) return undefined;
  const total = f.kept + f.replayed;
  let s = `Trained on ${count(total)} item${total === 1 ? '' : 's'}: ${count(f.kept)} the model did not know`;
  if (f.replayed) s += ` and ${count(f.replayed)} known one${f.replayed === 1 ? '' : 's'} replayed`;
  s += `. Dropped ${count(f.dropped)} it already knew.`;
  if (f.ungradeable) s += ` ${count(f.ungradeable)} ungradeable item${f.ungradeable === 1 ? ' was' : 's were'} neither trained on nor counted as wrong.`;
  return s;
}

/** With `grader: judge`: how far the judge agrees with the rule grader on the same answers, in words. */
export function judgeLine(d: ReportData): string | undefined {
  const a = d.filter?.agreement;
  if (!a) return undefined;
  const s = a.words.replace(/^./, (c) => c.toUpperCase());
  return `Grading: ${s}${/[.!?]$/.test(s) ? '' : '.'} (greedy answers of the items answered; the rule grader matches the reference and its aliases.)`;
}

export function device(d: ReportData): string | undefined {
  const r = d.train?.runtime;
  if (!r) return undefined;
  const gpus = r.gpus?.length
    ? new Set(r.gpus.map((g) => g.name)).size === 1
      ? `${r.gpus[0].name}${r.gpus.length > 1 ? ` ×${r.gpus.length}` : ''}`
      : r.gpus.map((g) => g.name).join(', ')
    : undefined;
  const procs =
    r.processes && r.processes > 1 ? `${r.processes} processes${r.distributed && r.distributed !== 'none' ? ` (${r.distributed})` : ''}` : undefined;
  const inner = [r.precision, gpus, procs, r.host ? `host ${r.host}` : undefined].filter(Boolean).join(', ');
  if (!r.device && !inner) return undefined;
  return `${r.device ?? 'device'}${inner ? ` (${inner})` : ''}`;
}

export function trainingLine(d: ReportData): string | undefined {
  const t = d.train;
  if (!t) return undefined;
  if (t.skipped) return 'Training skipped: nothing to train on.';
  const dev = device(d);
  let s = `${count(t.steps)} steps in ${duration(t.trainSeconds)}${dev ? ` on ${dev}` : ''}, base ${t.base}${t.initAdapter ? ', continuing the adapter of the model in service' : ''}.`;
  if (t.resumedFromStep) s += ` Resumed from step ${t.resumedFromStep} after an interruption.`;
  const loss = lossSummary(d);
  if (loss) s += ` ${loss}`;
  const r = t.runtime;
  const extra = [
    r?.tokensPerSecond ? `${count(Math.round(r.tokensPerSecond))} tokens/s` : '',
    r?.peakMemoryBytes ? `peak memory ${bytes(r.peakMemoryBytes)}` : '',
  ].filter(Boolean);
  if (extra.length) s += ` ${extra.join('; ')}.`;
  const batch = effectiveBatch(r);
  if (batch) s += ` ${batch}.`;
  const cpu = cpuNotice(r);
  if (cpu) s += ` ${cpu}`;
  return s;
}

/** "Effective batch 16 (2 per device × 4 accumulated × 2 processes)": what one optimiser step saw, whatever the GPU count. */
export function effectiveBatch(r: TrainRuntime | undefined): string | undefined {
  if (!r?.effectiveBatch || !r.perDeviceBatch || !r.gradientAccumulation) return undefined;
  const parts = [
    `${r.perDeviceBatch} per device`,
    `${r.gradientAccumulation} accumulated`,
    `${r.processes ?? 1} process${(r.processes ?? 1) === 1 ? '' : 'es'}`,
  ];
  return `Effective batch ${count(r.effectiveBatch)} (${parts.join(' × ')})`;
}

/**
 * A training that ran on the CPU says so wherever the run is summarised: fine for a small base, but
 * on a GPU host it means the GPU could not be used, and an 8B base would take days.
 */
export function cpuNotice(r: TrainRuntime | undefined): string | undefined {
  if (r?.device !== 'cpu') return undefined;
  return 'Trained on the CPU, not a GPU: on a GPU host that means its GPU could not be used (`python -m slearn_trainer info` says why; train.device: cuda refuses the CPU).';
}

export function lossSummary(d: ReportData): string | undefined {
  const pts = finiteLosses(d.losses);
  if (pts.length < 2) return undefined;
  const w = smoothingWindow(pts.length);
  const avg = movingAverage(pts, w);
  return `Loss ${avg[Math.min(w, avg.length) - 1].loss.toFixed(3)} → ${avg[avg.length - 1].loss.toFixed(3)} (moving average of ${w} steps).`;
}

/** The model the tuned one is measured against: the one in service, or the base when there is none. */
export function reference(d: ReportData): { label: 'current' | 'base'; acc: Accuracy } | undefined {
  const e = d.evaluation;
  if (!e) return undefined;
  return e.current ? { label: 'current', acc: e.current } : { label: 'base', acc: e.base };
}

export function gain(d: ReportData): number | undefined {
  if (d.promotion?.gain !== undefined) return d.promotion.gain;
  const ref = reference(d);
  const t = d.evaluation?.tuned;
  return ref && t ? t.accuracy - ref.acc.accuracy : undefined;
}

export function gainLine(d: ReportData): string | undefined {
  const ref = reference(d);
  const t = d.evaluation?.tuned;
  const g = gain(d);
  if (!ref || !t || g === undefined) return undefined;
  return `Gain over ${ref.label}: ${points(g)} (tuned ${pct(t.accuracy)} vs ${pct(ref.acc.accuracy)} on ${d.evaluation!.items} held-out items).`;
}

export function pairedLine(d: ReportData): string | undefined {
  const v = d.evaluation?.vsReference;
  if (!v) return undefined;
  return `Item by item, tuned vs ${v.a}: ${v.fixed} fixed, ${v.broken} broken (exact McNemar test on ${v.fixed + v.broken} discordant items, ${pValue(v.pValue)}).`;
}

export function forgetting(d: ReportData): number | undefined {
  if (d.promotion?.forgetting !== undefined) return d.promotion.forgetting;
  const r = d.evaluation?.retention;
  return r && r.total ? 1 - r.accuracy : undefined;
}

export function retentionLine(d: ReportData): string | undefined {
  const r = d.evaluation?.retention;
  if (!r) return d.evaluation?.tuned ? 'No retention check (no known items were sampled).' : undefined;
  if (!r.total) return `Retention: none of the ${r.ungradeable} known items asked again could be graded.`;
  return `Retention: ${r.correct} of ${r.total} items the model knew before tuning are still answered right after it (${pct(r.accuracy)}, 95% CI ${interval(r)}); forgetting ${pct(forgetting(d) ?? 0)}${r.ungradeable ? `; ${r.ungradeable} ungradeable` : ''}.`;
}
