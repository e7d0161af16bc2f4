const ARTICLES = new Set(['a', 'an', 'the']);

/** Lower-case, unicode-folded, punctuation and articles removed, whitespace collapsed. */
export function normalise(s: string): string {
  return tokens(s).join(' ');
}

export function tokens(s: string): string[] {
  return s
    .normalize('NFKC')
    .toLowerCase()
    .replace(/[\u2018\u2019]/g, "'")
    .replace(/[^\p{L}\p{N}\s.'-]/gu, ' ')
    .replace(/(?<!\d)\.|\.(?!\d)/g, ' ')
    .replace(/['-]/g, ' ')
    .split(/\s+/)
    .filter((t) => t && !ARTICLES.has(t));
}

export function tokenF1(prediction: string, reference: string): number {
  const p = tokens(prediction);
  const r = tokens(reference);
  if (!p.length || !r.length) return p.length === r.length ? 1 : 0;
  const counts = new Map<string, number>();
  for (const t of r) counts.set(t, (counts.get(t) ?? 0) + 1);
  let common = 0;
  for (const t of p) {
    const c = counts.get(t) ?? 0;
    if (c > 0) {
      common++;
      counts.set(t, c - 1);
    }
  }
  if (!common) return 0;
  const precision = common / p.length;
  const recall = common / r.length;
  return (2 * precision * recall) / (precision + recall);
}

function containsPhrase(haystack: string[], needle: string[]): boolean {
  if (!needle.length || needle.length > haystack.length) return false;
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

export interface MatchGrade {
  correct: boolean;
  score: number;
  rationale: string;
}

/** Exact, alias, whole-word containment, then token F1 against the best reference. */
export function matchGrade(answer: string, reference: string, aliases: string[] = [], f1Threshold = 0.8): MatchGrade {
  const cand = tokens(answer);
  if (!cand.length) return { correct: false, score: 0, rationale: 'empty answer' };
  const refs = [reference, ...aliases];
  for (const r of refs) {
    const rt = tokens(r);
    if (rt.length && rt.join(' ') === cand.join(' ')) {
      return { correct: true, score: 1, rationale: r === reference ? 'exact match' : `matches alias "${r}"` };
    }
  }
  for (const r of refs) {
    if (containsPhrase(cand, tokens(r))) return { correct: true, score: 1, rationale: `contains "${r}"` };
  }
  let best = 0;
  let bestRef = reference;
  for (const r of refs) {
    const f = tokenF1(answer, r);
    if (f > best) {
      best = f;
      bestRef = r;
    }
  }
  const correct = best >= f1Threshold;
  return { correct, score: best, rationale: `token F1 ${best.toFixed(2)} against "${bestRef}"${correct ? '' : ` (< ${f1Threshold})`}` };
}
