import { pct } from '../metrics';
import type { DecisionRecord, Delta, EvalItemResult } from '../schemas/results';
import type { Accuracy, LevelCounts } from '../schemas/run';
import { barChart, COLORS, groupedBars, lossChart, stackedBars, type Bar } from './charts';
import type { ReportData } from './data';
import { esc, mdCell } from './escape';
import { count, duration, interval, LEVEL_NAMES, LEVEL_ORDER, points, pValue, share } from './format';
import { cards, figure, filterableTable, page, type Card, type Column, type FilterRow } from './page';
import { DECISION_ORDER, decisionsByLevel, finiteLosses, groupByMeta, modelsIn, smoothingWindow, tally, type ModelLabel } from './series';
import * as say from './summary';

export type { ReportData, ComparisonData } from './data';
export { renderHistory } from './history';
export { renderComparison } from './compare';

const levelsOf = (d: ReportData): LevelCounts | undefined => d.levels ?? d.filter?.levels;
const levelTotal = (l: LevelCounts) => LEVEL_ORDER.reduce((a, k) => a + l[k], 0);
const words = (...s: (string | undefined)[]) => s.filter((x): x is string => Boolean(x)).join(' ');

interface AccuracyRow {
  label: string;
  acc: Accuracy;
  color: string;
  note: string;
}

/** Base, current, tuned, and retention last: it is asked on other items (ones the model knew). */
function accuracyRows(d: ReportData): AccuracyRow[] {
  const e = d.evaluation;
  if (!e) return [];
  const rows: AccuracyRow[] = [{ label: 'base', acc: e.base, color: COLORS.base, note: 'no adapter' }];
  if (e.current)
    rows.push({
      label: 'current',
      acc: e.current,
      color: COLORS.current,
      note: d.current?.version ? `version ${d.current.version}, in service` : 'in service',
    });
  if (e.tuned) rows.push({ label: 'tuned', acc: e.tuned, color: COLORS.tuned, note: e.tunedModel ?? 'this run' });
  if (e.retention)
    rows.push({
      label: 'retention',
      acc: e.retention,
      color: COLORS.retention,
      note: `tuned, on ${e.retention.total + e.retention.ungradeable} items it knew`,
    });
  return rows;
}

// ---------------------------------------------------------------- markdown

/** The terminal report: what happened and why, in the order a reader asks. */
export function renderMarkdown(d: ReportData): string {
  const o = say.outcome(d);
  const out: string[] = [`# slearn run ${d.runId}`, '', words(`Config **${d.name}**.`, say.startedFrom(d)), '', `**Outcome: ${o.badge}.** ${o.headline}`];
  if (o.reason) out.push('', `Reason: ${o.reason}`);

  const levels = levelsOf(d);
  if (d.filter || levels || d.counts.items) {
    out.push('', '## What the model knew', '', say.answeredLine(d));
    if (levels) {
      const total = levelTotal(levels);
      out.push(
        '',
        '| level | items | share |',
        '|---|---:|---:|',
        ...LEVEL_ORDER.map((l) => `| ${LEVEL_NAMES[l]} | ${count(levels[l])} | ${share(levels[l], total)} |`),
      );
    }
    const trained = say.trainedOnLine(d);
    if (trained) out.push('', trained);
    out.push(...judgeSection(d));
  }

  const training = say.trainingLine(d);
  if (training) out.push('', '## Training', '', training);

  const e = d.evaluation;
  if (e) {
    out.push(
      '',
      `## Evaluation on ${count(e.items)} held-out items`,
      '',
      '| model | accuracy | 95% CI | right / graded | ungradeable |',
      '|---|---:|---|---:|---:|',
    );
    for (const r of accuracyRows(d))
      out.push(
        `| ${r.label} (${mdCell(r.note, 60)}) | ${pct(r.acc.accuracy)} | ${interval(r.acc)} | ${r.acc.correct} / ${r.acc.total} | ${r.acc.ungradeable} |`,
      );
    const lines = [say.gainLine(d), say.pairedLine(d), say.retentionLine(d)].filter((x): x is string => Boolean(x));
    if (lines.length) out.push('', ...lines.flatMap((l) => [l, '']).slice(0, -1));
    out.push(...examples(d.results));
  }

  if (!d.filter && !e && !training) out.push('', 'Nothing was answered, trained or evaluated in this run.');
  if (d.notices.length) out.push('', '## Notices', '', ...d.notices.map((n) => `- ${n}`));
  return `${out.join('\n')}\n`;
}

/** The judge against the rule grader: the 2×2 table and a few disagreements of each kind. */
function judgeSection(d: ReportData): string[] {
  const a = d.filter?.agreement;
  if (!a) return [];
  const t = a.table;
  const out = [
    '',
    '### The judge against the rule grader',
    '',
    say.judgeLine(d)!,
    '',
    '| | rule grader: right | rule grader: wrong |',
    '|---|---:|---:|',
    `| judge: right | ${t.bothCorrect} | ${t.onlyA} |`,
    `| judge: wrong | ${t.onlyB} | ${t.bothWrong} |`,
  ];
  for (const [list, title] of [
    [a.examples.judgeOnly, 'Right for the judge only'],
    [a.examples.ruleOnly, 'Right for the rule grader only'],
  ] as const) {
    if (!list.length) continue;
    out.push('', `#### ${title}`, '', '| question | reference | answer | judge said |', '|---|---|---|---|');
    for (const x of list) out.push(`| ${mdCell(x.question)} | ${mdCell(x.reference, 60)} | ${mdCell(x.answer, 80)} | ${mdCell(x.rationale, 80)} |`);
  }
  return out;
}

/** A few fixed and broken items: what tuning changed, where a reader can check it. */
function examples(results: EvalItemResult[]): string[] {
  const ref: ModelLabel = results.some((r) => r.answers.current) ? 'current' : 'base';
  const out: string[] = [];
  for (const [delta, title] of [
    ['fixed', 'Fixed by tuning'],
    ['broken', 'Broken by tuning'],
  ] as const) {
    const all = results.filter((r) => r.delta === delta);
    if (!all.length) continue;
    const shown = all.slice(0, 5);
    out.push(
      '',
      `### ${title} (${shown.length < all.length ? `${shown.length} of ${all.length}` : all.length})`,
      '',
      `| question | reference | ${ref} | tuned |`,
      '|---|---|---|---|',
    );
    for (const r of shown)
      out.push(`| ${mdCell(r.question)} | ${mdCell(r.reference, 60)} | ${mdCell(r.answers[ref]?.answer, 80)} | ${mdCell(r.answers.tuned?.answer, 80)} |`);
  }
  return out;
}

// ---------------------------------------------------------------- html

/** The run's page: a summary first, then the charts, then every listed item, filterable. */
export function renderHtml(d: ReportData): string {
  const o = say.outcome(d);
  const sub = words(`Config <b>${esc(d.name)}</b>.`, esc(say.startedFrom(d) ?? ''));
  const summary = [
    d.counts.items ? say.answeredLine(d) : undefined,
    say.trainedOnLine(d),
    say.judgeLine(d),
    say.trainingLine(d),
    say.gainLine(d),
    say.pairedLine(d),
    say.retentionLine(d),
  ].filter((x): x is string => Boolean(x));
  const body = [
    `<h1>slearn run <code>${esc(d.runId)}</code> <span class="badge ${o.tone}">${esc(o.badge)}</span></h1>`,
    `<p class="sub">${sub}</p>`,
    `<div class="verdict ${o.tone}"><strong>${esc(o.headline)}</strong>${o.reason ? `<br>${esc(o.reason)}` : ''}</div>`,
    cards(summaryCards(d)),
    d.notices.length ? `<h2>Notices</h2><ul class="notices">${d.notices.map((n) => `<li>${esc(n)}</li>`).join('')}</ul>` : '',
    summary.length
      ? `<h2>Summary</h2>${summary.map((s) => `<p>${esc(s)}</p>`).join('')}`
      : '<p class="empty">Nothing was answered, trained or evaluated in this run.</p>',
    charts(d),
    metaCharts(d.results),
    d.results.length ? itemsSection(d) : '',
    d.decisions.length ? decisionsSection(d) : '',
    `<footer>slearn report for run ${esc(d.runId)} of ${esc(d.name)}. A self-contained page: it loads nothing from the network.</footer>`,
  ];
  return page(`slearn ${d.runId}`, body.filter(Boolean).join('\n'));
}

function summaryCards(d: ReportData): Card[] {
  const out: Card[] = [];
  if (d.counts.items)
    out.push({
      k: 'Items',
      v: count(d.counts.items),
      n: `${count(d.counts.graded)} graded${d.counts.ungradeable ? ` · ${d.counts.ungradeable} ungradeable` : ''}`,
    });
  const levels = levelsOf(d);
  if (levels) {
    const total = levelTotal(levels);
    out.push({ k: 'Already known', v: share(levels.known, total), n: `${count(levels.known)} of ${count(total)} Known · ${count(levels.unknown)} Unknown` });
  }
  if (d.filter)
    out.push({
      k: 'Trained on',
      v: count(d.filter.kept + d.filter.replayed),
      n: `${count(d.filter.kept)} unknown${d.filter.replayed ? ` + ${count(d.filter.replayed)} replayed` : ''} · ${count(d.filter.dropped)} dropped`,
    });
  if (d.train && !d.train.skipped)
    out.push({
      k: 'Training',
      v: duration(d.train.trainSeconds),
      n: words(`${count(d.train.steps)} steps`, say.device(d) ? `on ${say.device(d)}` : undefined),
    });
  const e = d.evaluation;
  if (e?.tuned) out.push({ k: 'Tuned accuracy', v: pct(e.tuned.accuracy), n: `95% CI ${interval(e.tuned)} · ${e.tuned.correct}/${e.tuned.total}` });
  else if (e) out.push({ k: 'Base accuracy', v: pct(e.base.accuracy), n: `95% CI ${interval(e.base)}` });
  const g = say.gain(d);
  const ref = say.reference(d);
  if (g !== undefined && ref)
    out.push({
      k: `Gain vs ${ref.label}`,
      v: points(g),
      n: e?.vsReference
        ? `${e.vsReference.fixed} fixed · ${e.vsReference.broken} broken · ${pValue(e.vsReference.pValue)}`
        : `${ref.label} ${pct(ref.acc.accuracy)}`,
    });
  if (e?.retention)
    out.push({ k: 'Retention', v: pct(e.retention.accuracy), n: `forgetting ${pct(say.forgetting(d) ?? 0)} of ${e.retention.total} known items` });
  return out;
}

function charts(d: ReportData): string {
  const figs: string[] = [];
  const acc = accuracyRows(d);
  if (acc.length) {
    const bars: Bar[] = acc.map((r) => ({ label: r.label, note: r.note, value: r.acc.accuracy, low: r.acc.low, high: r.acc.high, color: r.color }));
    figs.push(
      figure(
        `Accuracy on ${count(d.evaluation!.items)} held-out items`,
        barChart('accuracy with 95% intervals', bars),
        'whiskers: 95% Wilson interval; retention is asked on items the model knew',
      ),
    );
  }
  const levels = levelsOf(d);
  const split: { label: string; segments: { label: string; value: number; color: string }[] }[] = [];
  if (levels) split.push({ label: 'knowledge', segments: LEVEL_ORDER.map((l) => ({ label: LEVEL_NAMES[l], value: levels[l], color: COLORS[l] })) });
  if (d.filter) {
    const f = d.filter;
    split.push({
      label: 'training',
      segments: [
        { label: 'trained on', value: f.kept, color: COLORS.kept },
        { label: 'replayed', value: f.replayed, color: COLORS.replayed },
        { label: 'dropped', value: f.dropped, color: COLORS.dropped },
        { label: 'ungradeable', value: f.ungradeable, color: COLORS.ungradeable },
      ],
    });
  }
  if (split.length) figs.push(figure('What the model knew, and what it was trained on', stackedBars('knowledge levels and training split', split)));
  const losses = finiteLosses(d.losses);
  if (losses.length >= 2) figs.push(figure('Training loss', lossChart(losses, smoothingWindow(losses.length))));
  if (d.decisions.length) {
    const rows = decisionsByLevel(d.decisions).map((r) => ({
      label: r.level === 'ungraded' ? 'not graded' : LEVEL_NAMES[r.level],
      segments: DECISION_ORDER.map((k) => ({ label: k === 'kept' ? 'trained on' : k, value: r.decisions[k], color: COLORS[k] })),
    }));
    const total = d.filter ? d.filter.kept + d.filter.dropped + d.filter.replayed + d.filter.ungradeable : d.decisions.length;
    figs.push(
      figure(
        'Training data by knowledge level',
        stackedBars('decisions per knowledge level', rows, 'count'),
        d.decisions.length < total ? `the first ${count(d.decisions.length)} of ${count(total)} items` : `${count(total)} items`,
      ),
    );
  }
  return figs.length ? `<h2>Charts</h2><div class="charts">${figs.join('')}</div>` : '';
}

const MODEL_COLORS: Record<ModelLabel, string> = { base: COLORS.base, current: COLORS.current, tuned: COLORS.tuned };

function metaCharts(results: EvalItemResult[]): string {
  const breakdowns = groupByMeta(results);
  if (!breakdowns.length) return '';
  const models = modelsIn(results);
  const legend = models.map((m) => ({ name: m, color: MODEL_COLORS[m] }));
  const figs = breakdowns.map((b) =>
    figure(
      `Accuracy by ${b.key}`,
      groupedBars(
        `accuracy by ${b.key}`,
        b.groups.map((g) => ({
          label: g.value,
          note: `${g.items} item${g.items === 1 ? '' : 's'}`,
          bars: models.map((m) => {
            const t = g.models[m];
            return {
              name: m,
              color: MODEL_COLORS[m],
              value: t?.graded ? t.correct / t.graded : undefined,
              detail: t?.graded ? `${pct(t.correct / t.graded, 0)} (${t.correct}/${t.graded})` : 'not graded',
            };
          }),
        })),
        legend,
      ),
      'held-out items grouped by their meta field',
    ),
  );
  return `<h2>Accuracy by group</h2><div class="charts">${figs.join('')}</div>`;
}

/** The item's id and meta fields, small under the question: searchable, and there to filter by eye. */
function tags(id: string, meta: Record<string, unknown> = {}): string {
  const fields = Object.entries(meta).map(([k, v]) => `<span>${esc(k)}: ${esc(typeof v === 'string' ? v : JSON.stringify(v))}</span>`);
  return `<div class="tags"><span>${esc(id)}</span> ${fields.join(' ')}</div>`;
}

function mark(status: 'graded' | 'ungradeable', correct: boolean, rationale?: string): string {
  const [cls, sym, word] = status !== 'graded' ? ['na', '?', 'ungradeable'] : correct ? ['ok', '✓', 'right'] : ['no', '✗', 'wrong'];
  return `<span class="mark ${cls}" title="${esc(rationale ? `${word}: ${rationale}` : word)}">${sym}</span>`;
}

const questionCell = (id: string, question: string, meta?: Record<string, unknown>) => `${esc(question)}${tags(id, meta)}`;

const DELTA_ORDER: readonly Delta[] = ['fixed', 'broken', 'both-right', 'both-wrong', 'ungradeable', 'base-only'];

function itemsSection(d: ReportData): string {
  const models = modelsIn(d.results);
  const cols: Column[] = [
    { head: 'question', cls: 'q' },
    { head: 'reference', cls: 'text' },
    ...models.map((m) => ({ head: m, cls: 'text' })),
    { head: 'delta' },
  ];
  const rows: FilterRow[] = d.results.map((r) => ({
    facets: { delta: r.delta },
    cells: [
      questionCell(r.id, r.question, r.meta),
      esc(r.reference),
      ...models.map((m) => {
        const a = r.answers[m];
        return a ? `${mark(a.status, a.correct, a.rationale)}${esc(a.answer)}` : '<span class="mark na">–</span>';
      }),
      `<span class="pill ${r.delta}">${esc(r.delta)}</span>`,
    ],
  }));
  const counts = tally(d.results.map((r) => r.delta));
  const ref = models.includes('current') ? 'current' : 'base';
  const total = d.evaluation?.items ?? d.results.length;
  const intro = `Each held-out item with every model's answer. The delta compares tuned with ${ref}: <b>fixed</b> (tuning made it right), <b>broken</b> (tuning made it wrong), both right, both wrong, or ungradeable.${d.results.length < total ? ` Showing the first ${count(d.results.length)} of ${count(total)}.` : ''}`;
  return `<h2>Held-out items</h2><p>${intro}</p>${filterableTable({
    id: 'items',
    placeholder: 'search items and answers',
    facets: [{ name: 'delta', label: 'delta', options: DELTA_ORDER.filter((k) => counts.get(k)).map((k) => ({ value: k, label: k, count: counts.get(k)! })) }],
    cols,
    rows,
  })}`;
}

function answersCell(r: DecisionRecord): string {
  const one = (a: string, i: number) => {
    const g = r.grades[i];
    return `${g ? mark('graded', g.correct, g.rationale) : mark('ungradeable', false)}${esc(a)}`;
  };
  if (r.answers.length <= 1) return r.answers.length ? one(r.answers[0], 0) : '<span class="mark na">–</span>';
  return `<ol class="answers">${r.answers.map((a, i) => `<li>${one(a, i)}</li>`).join('')}</ol>`;
}

function decisionsSection(d: ReportData): string {
  const levelKey = (r: DecisionRecord) => r.level ?? 'ungraded';
  const decisions = tally(d.decisions.map((r) => r.decision));
  const levels = tally(d.decisions.map(levelKey));
  // A judged run: the judge's verdict on the greedy answer against the rule grader's, to filter on.
  const judged = d.decisions.some((r) => r.grades[0]?.rule !== undefined);
  const graders = (r: DecisionRecord) => {
    const g = r.grades[0];
    if (g?.rule === undefined) return 'not graded';
    return g.correct === g.rule ? 'agree' : g.correct ? 'judge only' : 'rule only';
  };
  const agreeing = tally(d.decisions.map(graders));
  const rows: FilterRow[] = d.decisions.map((r) => ({
    facets: { decision: r.decision, level: levelKey(r), ...(judged ? { graders: graders(r) } : {}) },
    cells: [
      questionCell(r.id, r.question, r.meta),
      esc(r.reference),
      r.level ? esc(LEVEL_NAMES[r.level]) : '<span class="na">not graded</span>',
      answersCell(r),
      `<span class="pill ${r.decision}">${esc(r.decision)}</span>`,
      esc(r.why),
    ],
  }));
  const total = d.filter ? d.filter.kept + d.filter.dropped + d.filter.replayed + d.filter.ungradeable : d.decisions.length;
  const intro = `What the filter did with each item the model answered: <b>kept</b> (trained on), <b>dropped</b> (already known), <b>replayed</b> (known, trained on anyway) or <b>ungradeable</b>. Answers list the greedy one first, then the samples.${d.decisions.length < total ? ` Showing the first ${count(d.decisions.length)} of ${count(total)}.` : ''}`;
  return `<h2>Training decisions</h2><p>${intro}</p>${filterableTable({
    id: 'decisions',
    placeholder: 'search items and reasons',
    facets: [
      {
        name: 'decision',
        label: 'decision',
        options: DECISION_ORDER.filter((k) => decisions.get(k)).map((k) => ({ value: k, label: k, count: decisions.get(k)! })),
      },
      {
        name: 'level',
        label: 'level',
        options: [...LEVEL_ORDER, 'ungraded' as const]
          .filter((k) => levels.get(k))
          .map((k) => ({ value: k, label: k === 'ungraded' ? 'not graded' : LEVEL_NAMES[k], count: levels.get(k)! })),
      },
      ...(judged
        ? [
            {
              name: 'graders',
              label: 'judge vs rule grader',
              options: (['agree', 'judge only', 'rule only', 'not graded'] as const)
                .filter((k) => agreeing.get(k))
                .map((k) => ({
                  value: k,
                  label: k === 'judge only' ? 'right for the judge only' : k === 'rule only' ? 'right for the rule only' : k,
                  count: agreeing.get(k)!,
                })),
            },
          ]
        : []),
    ],
    cols: [
      { head: 'question', cls: 'q' },
      { head: 'reference', cls: 'text' },
      { head: 'level' },
      { head: 'answers', cls: 'text' },
      { head: 'decision' },
      { head: 'why', cls: 'why' },
    ],
    rows,
  })}`;
}
