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

export function pct(x: number, digits = 1): string {
  return `${(x * 100).toFixed(digits)}%`;
}
