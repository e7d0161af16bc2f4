import type { Accuracy } from './schemas/run';

/** Wilson score interval: honest at small n and near 0 or 1, unlike the normal approximation. */
export function wilson(correct: number, total: number, z = 1.96): { low: number; high: number } {
  if (total === 0) return { low: 0, high: 0 };
  const p = correct / total;
  const denom = 1 + (z * z) / total;
  const centre = (p + (z * z) / (2 * total)) / denom;
  const half = (z * Math.sqrt((p * (1 - p)) / total + (z * z) / (4 * total * total))) / denom;
  return { low: Math.max(0, centre - half), high: Math.min(1, centre + half) };
}

/** Ungradeable items are reported beside the accuracy and left out of it: neither right nor wrong. */
export function accuracy(correct: number, total: number, ungradeable = 0): Accuracy {
  return { correct, total, ungradeable, accuracy: total ? correct / total : 0, ...wilson(correct, total) };
}

function logChoose(n: number, k: number): number {
  let s = 0;
  for (let i = 1; i <= k; i++) s += Math.log(n - k + i) - Math.log(i);
  return s;
}

/**
 * Exact McNemar test for paired outcomes: `b` items only the second model got right, `c` only
 * the first. Two-sided binomial test of the discordant pairs against p = 1/2.
 */
export function mcnemar(b: number, c: number): number {
  const n = b + c;
  if (n === 0) return 1;
  const k = Math.min(b, c);
  let tail = 0;
  for (let i = 0; i <= k; i++) tail += Math.exp(logChoose(n, i) - n * Math.LN2);
  return Math.min(1, 2 * tail);
}

export function pct(x: number, digits = 1): string {
  return `${(x * 100).toFixed(digits)}%`;
}
