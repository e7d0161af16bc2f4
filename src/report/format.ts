import { pct } from '../metrics';
import type { Level } from '../schemas/config';
import type { Accuracy } from '../schemas/run';

/** Gekhman et al. (2024)'s names for the knowledge categories. */
export const LEVEL_ORDER: readonly Level[] = ['known', 'maybeKnown', 'weaklyKnown', 'unknown'];
export const LEVEL_NAMES: Record<Level, string> = { known: 'Known', maybeKnown: 'MaybeKnown', weaklyKnown: 'WeaklyKnown', unknown: 'Unknown' };

export const interval = (a: Accuracy) => `${pct(a.low)}–${pct(a.high)}`;

/** An accuracy the way every table prints it: the share, its 95% Wilson interval and the counts behind it. */
export const withCi = (a: Accuracy) =>
  `${pct(a.accuracy)} (95% CI ${interval(a)}, ${a.correct}/${a.total}${a.ungradeable ? `, ${a.ungradeable} ungradeable` : ''})`;

/** A difference of two accuracies, in percentage points, always signed. */
export const points = (x: number) => `${x > 0 ? '+' : x < 0 ? '−' : '±'}${Math.abs(x * 100).toFixed(1)} points`;

export const pValue = (p: number) => (p < 0.001 ? 'p < 0.001' : `p = ${p.toPrecision(2)}`);

export function duration(seconds: number): string {
  if (!Number.isFinite(seconds)) return 'n/a';
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const s = Math.round(seconds);
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

export function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export const count = (n: number) => n.toLocaleString('en-US');

/** A share that reads well for small wholes ("3 of 40, 7.5%"). */
export const share = (part: number, whole: number) => (whole ? pct(part / whole) : '–');

/** Registry timestamps are ISO strings; shown to the minute, in UTC, so every reader sees the same. */
export function when(iso: string): string {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return iso;
  return `${new Date(t).toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}
