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

/**
 * Two graders' verdicts on the same items as a 2×2 table. `a` is the grader under scrutiny (the
 * judge), `b` the reference it is held against (the rule grader): `onlyA` counts items A calls
 * correct and B wrong.
 */
export interface AgreementTable {
  bothCorrect: number;
  onlyA: number;
  onlyB: number;
  bothWrong: number;
}

export interface Agreement {
  table: AgreementTable;
  items: number;
  /** Share of items on which the two graders give the same verdict. */
  observed: number;
  /** The agreement expected by chance from each grader's own rate of "correct". */
  expected: number;
  /** Cohen's κ; null when undefined (both graders gave one and the same verdict throughout, or no item). */
  kappa: number | null;
  /** 95% interval of κ from Cohen's (1960) large-sample standard error; null with κ. */
  low: number | null;
  high: number | null;
}

/** Counts one pair of verdicts into `t` (for a table kept while items stream past). */
export function countPair(t: AgreementTable, a: boolean, b: boolean): void {
  if (a && b) t.bothCorrect++;
  else if (a) t.onlyA++;
  else if (b) t.onlyB++;
  else t.bothWrong++;
}

/** The 2×2 table of paired verdicts `[a, b]`. */
export function confusion(pairs: Iterable<readonly [boolean, boolean]>): AgreementTable {
  const t: AgreementTable = { bothCorrect: 0, onlyA: 0, onlyB: 0, bothWrong: 0 };
  for (const [a, b] of pairs) countPair(t, a, b);
  return t;
}

/**
 * Cohen's κ = (pₒ − pₑ) / (1 − pₑ): agreement beyond what two graders with these rates of "correct"
 * would reach by chance. Raw agreement flatters a judge on a set the model mostly gets wrong: two
 * graders that both say "wrong" 90% of the time agree on 82% of items by chance alone.
 */
export function agreement(t: AgreementTable, z = 1.96): Agreement {
  const n = t.bothCorrect + t.onlyA + t.onlyB + t.bothWrong;
  if (n === 0) return { table: t, items: 0, observed: 0, expected: 0, kappa: null, low: null, high: null };
  const observed = (t.bothCorrect + t.bothWrong) / n;
  const aYes = (t.bothCorrect + t.onlyA) / n;
  const bYes = (t.bothCorrect + t.onlyB) / n;
  const expected = aYes * bYes + (1 - aYes) * (1 - bYes);
  if (expected >= 1) return { table: t, items: n, observed, expected, kappa: null, low: null, high: null };
  const kappa = (observed - expected) / (1 - expected);
  const se = Math.sqrt((observed * (1 - observed)) / (n * (1 - expected) ** 2));
  return { table: t, items: n, observed, expected, kappa, low: Math.max(-1, kappa - z * se), high: Math.min(1, kappa + z * se) };
}

/** Landis and Koch's (1977) words for a κ, the scale most papers quote. */
export function kappaWords(kappa: number): string {
  if (kappa < 0) return 'worse than chance';
  if (kappa <= 0.2) return 'slight';
  if (kappa <= 0.4) return 'fair';
  if (kappa <= 0.6) return 'moderate';
  if (kappa <= 0.8) return 'substantial';
  return 'almost perfect';
}

/**
 * One sentence to print beside κ: the figure, its words, and a warning when the judge cannot be
 * trusted on its own (κ at most 0.4, or an interval reaching that low).
 */
export function describeAgreement(a: Agreement, names: { a: string; b: string } = { a: 'the judge', b: 'the rule grader' }): string {
  if (a.kappa === null) {
    return a.items === 0
      ? `no item graded by both ${names.a} and ${names.b}`
      : `κ undefined: ${names.a} and ${names.b} gave one and the same verdict on all ${a.items} items`;
  }
  const t = a.table;
  const aYes = t.bothCorrect + t.onlyA;
  const bYes = t.bothCorrect + t.onlyB;
  // One grader giving one verdict to everything makes κ 0 by construction: say which, it is the finding.
  const constant = [aYes, bYes]
    .map((yes, i) => (yes === 0 || yes === a.items ? `${i ? names.b : names.a} ${yes ? 'accepted' : 'rejected'} every answer` : ''))
    .filter(Boolean);
  if (constant.length) {
    return `${names.a} agrees with ${names.b} on ${pct(a.observed)} of ${a.items} items, κ ${a.kappa.toFixed(2)} (${kappaWords(a.kappa)}): ${constant.join(' and ')}, so agreement is no better than chance by construction. ${names.a.replace(/^./, (c) => c.toUpperCase())}'s accuracy is not to be trusted on its own: read it beside ${names.b}'s.`;
  }
  const head = `${names.a} agrees with ${names.b} on ${pct(a.observed)} of ${a.items} items, κ ${a.kappa.toFixed(2)} (95% CI ${a.low!.toFixed(2)} to ${a.high!.toFixed(2)}, ${kappaWords(a.kappa)})`;
  const split = `${t.onlyA} correct only for ${names.a}, ${t.onlyB} only for ${names.b}`;
  if (a.kappa <= 0.4) return `${head}; ${split}. Agreement this low means ${names.a}'s accuracy is not to be trusted on its own: read it beside ${names.b}'s.`;
  if (a.low! <= 0.4) return `${head}; ${split}. The interval still reaches low agreement: too few items to trust ${names.a} on its own.`;
  return `${head}; ${split}.`;
}

/** 32-bit FNV-1a: a stable, dependency-free hash for seeded picks (not for security). */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** The examples `disagreements` keeps: up to `perKind` items of each kind of disagreement. */
export interface Disagreements<T> {
  /** Correct for A (the judge), wrong for B (the rule grader). */
  onlyA: T[];
  /** Wrong for A, correct for B. */
  onlyB: T[];
}

/**
 * A few examples of each kind of disagreement, picked in one pass with memory for `perKind` items
 * per kind: the items whose seeded hash of `key` is smallest. The pick depends on the seed and the
 * items' keys only, not on their order, and an item picked stays picked as items are added unless
 * a newcomer hashes lower.
 */
export function disagreements<T>(
  items: Iterable<T>,
  verdicts: (item: T) => readonly [boolean, boolean] | undefined,
  key: (item: T) => string,
  opts: { perKind?: number; seed?: number } = {},
): Disagreements<T> {
  const perKind = opts.perKind ?? 3;
  const seed = opts.seed ?? 0;
  const kept = { onlyA: [] as { h: number; k: string; item: T }[], onlyB: [] as { h: number; k: string; item: T }[] };
  const before = (x: { h: number; k: string }, y: { h: number; k: string }) => (x.h !== y.h ? x.h < y.h : x.k < y.k);
  for (const item of items) {
    const v = verdicts(item);
    if (!v || v[0] === v[1]) continue;
    const list = v[0] ? kept.onlyA : kept.onlyB;
    const k = key(item);
    const entry = { h: fnv1a(`${seed}\u0000${k}`), k, item };
    if (list.length === perKind && !before(entry, list[list.length - 1])) continue;
    let i = list.length;
    while (i > 0 && before(entry, list[i - 1])) i--;
    list.splice(i, 0, entry);
    if (list.length > perKind) list.pop();
  }
  return { onlyA: kept.onlyA.map((e) => e.item), onlyB: kept.onlyB.map((e) => e.item) };
}
