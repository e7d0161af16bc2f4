const ARTICLES = new Set(['a', 'an', 'the']);

/**
 * How an answer is cut into tokens for matching and F1. `words`: whitespace-separated words, as
 * English QA grading does (SQuAD). `characters`: every letter or digit is a token, for a script
 * without spaces that `auto` does not recognise. `auto` (the default): words, except that runs of
 * Chinese, Japanese or Korean script are cut into characters, so "李白" is two tokens and an
 * answer in Chinese gets partial credit instead of 0 or 1; Latin words and numbers inside such a
 * run ("DNA复制", "1963年") stay whole.
 */
export type TokenMode = 'auto' | 'words' | 'characters';

// Script extensions, not scripts: the prolonged sound mark ー and the iteration mark 々 belong to
// the Common script but are used only inside Japanese or Chinese words.
const CJK_CLASS = '[\\p{scx=Han}\\p{scx=Hiragana}\\p{scx=Katakana}\\p{scx=Hangul}]';
const CJK = new RegExp(CJK_CLASS, 'gu');
const CJK_ONE = new RegExp(CJK_CLASS, 'u');

/** Lower-case, unicode-folded, punctuation and articles removed, whitespace collapsed. */
export function normalise(s: string, mode: TokenMode = 'auto'): string {
  return tokens(s, mode).join(' ');
}

/**
 * NFKC first, so full-width letters, digits and punctuation (ＤＮＡ, １２, ！, ，) become their ASCII
 * forms; then every punctuation mark or symbol of any script (。、《》「」· included) is a separator,
 * except a dot inside a number ("6.5").
 */
export function tokens(s: string, mode: TokenMode = 'auto'): string[] {
  let t = s
    .normalize('NFKC')
    .toLowerCase()
    .replace(/[\u2018\u2019]/g, "'")
    .replace(/[^\p{L}\p{N}\p{M}\s.'-]/gu, ' ')
    .replace(/(?<!\d)\.|\.(?!\d)/g, ' ')
    .replace(/['-]/g, ' ');
  if (mode === 'auto') t = t.replace(CJK, ' $& ');
  const words = t.split(/\s+/).filter((w) => w && !ARTICLES.has(w));
  if (mode !== 'characters') return words;
  // Combining marks stay with their letter (Devanagari vowel signs, Thai tone marks).
  return words.flatMap((w) => w.match(/[\p{L}\p{N}.][\p{M}]*/gu) ?? []).filter((c) => c !== '.');
}

const isCjk = (t: string) => CJK_ONE.test(t);

/**
 * F1 between an answer and a reference. Over words it counts shared tokens in any order, as SQuAD
 * scores English. Where the reference has Chinese, Japanese or Korean characters (or in
 * `characters` mode) it counts the longest run of tokens the two share, as the CMRC 2018 and DRCD
 * scripts score Chinese: a bag of characters would give "白李" full marks against "李白".
 */
export function tokenF1(prediction: string, reference: string, mode: TokenMode = 'auto'): number {
  const p = tokens(prediction, mode);
  const r = tokens(reference, mode);
  if (!p.length || !r.length) return p.length === r.length ? 1 : 0;
  const common = mode === 'characters' || (mode === 'auto' && r.some(isCjk)) ? longestCommonRun(p, r) : sharedTokens(p, r);
  if (!common) return 0;
  const precision = common / p.length;
  const recall = common / r.length;
  return (2 * precision * recall) / (precision + recall);
}

function sharedTokens(p: string[], r: string[]): number {
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
  return common;
}

/** Length of the longest contiguous run of tokens found in both (dynamic programming, one row). */
function longestCommonRun(p: string[], r: string[]): number {
  let best = 0;
  let prev = new Array<number>(r.length + 1).fill(0);
  for (let i = 1; i <= p.length; i++) {
    const row = new Array<number>(r.length + 1).fill(0);
    for (let j = 1; j <= r.length; j++) {
      if (p[i - 1] === r[j - 1]) {
        row[j] = prev[j - 1] + 1;
        if (row[j] > best) best = row[j];
      }
    }
    prev = row;
  }
  return best;
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

/** The match grader's settings: the `grader` block of a config with `type: match` fits as it is. */
export interface MatchOptions {
  /** Token F1 at or above which an answer counts as correct (default 0.8). */
  f1Threshold?: number;
  /** How answers are cut into tokens (default `auto`). */
  tokens?: TokenMode;
}

/**
 * Exact, alias, whole-token containment, then token F1 against the best reference. The last
 * argument is the F1 threshold alone (as before) or the match grader's settings.
 */
export function matchGrade(answer: string, reference: string, aliases: string[] = [], options: number | MatchOptions = {}): MatchGrade {
  const { f1Threshold = 0.8, tokens: mode = 'auto' } = typeof options === 'number' ? { f1Threshold: options } : options;
  const cand = tokens(answer, mode);
  if (!cand.length) return { correct: false, score: 0, rationale: 'empty answer' };
  const refs = [reference, ...aliases];
  for (const r of refs) {
    const rt = tokens(r, mode);
    if (rt.length && rt.join(' ') === cand.join(' ')) {
      return { correct: true, score: 1, rationale: r === reference ? 'exact match' : `matches alias "${r}"` };
    }
  }
  for (const r of refs) {
    if (containsPhrase(cand, tokens(r, mode))) return { correct: true, score: 1, rationale: `contains "${r}"` };
  }
  let best = 0;
  let bestRef = reference;
  for (const r of refs) {
    const f = tokenF1(answer, r, mode);
    if (f > best) {
      best = f;
      bestRef = r;
    }
  }
  const correct = best >= f1Threshold;
  return { correct, score: best, rationale: `token F1 ${best.toFixed(2)} against "${bestRef}"${correct ? '' : ` (< ${f1Threshold})`}` };
}
