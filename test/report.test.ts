import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { accuracy, pct } from '../src/metrics';
import type { DecisionRecord, EvalItemResult } from '../src/schemas/results';
import { lossChart, niceTicks, timeTicks } from '../src/report/charts';
import { esc, mdCell } from '../src/report/escape';
import { duration, points, pValue } from '../src/report/format';
import { renderComparison, renderHistory, renderHtml, renderMarkdown, type ComparisonData, type ReportData } from '../src/report/render';
import { decisionsByLevel, groupByMeta, movingAverage, smoothingWindow } from '../src/report/series';
import type { AliasEvent, ModelVersion, RunRecord } from '../src/schemas/registry';

const fixture = <T>(name: string): T => JSON.parse(readFileSync(join(__dirname, 'fixtures/report', name), 'utf8')) as T;
const sample = fixture<ReportData>('sample.json');
const nothingNew = fixture<ReportData>('nothing-new.json');
const history = fixture<{ name: string; versions: ModelVersion[]; aliases: AliasEvent[]; runs: RunRecord[] }>('history.json');
const comparison = fixture<ComparisonData>('comparison.json');

/** The rows of one table body, found by the id of its filterable block. */
function bodyRows(html: string, id: string): string[] {
  const start = html.indexOf(`<div class="filterable" id="${id}">`);
  expect(start).toBeGreaterThanOrEqual(0);
  const body = html.slice(html.indexOf('<tbody>', start), html.indexOf('</tbody>', start));
  return body.match(/<tr[ >]/g) ?? [];
}

const pages = () => ({
  run: renderHtml(sample),
  nothingNew: renderHtml(nothingNew),
  history: renderHistory(history.name, history.versions, history.aliases, history.runs).html,
  comparison: renderComparison(comparison).html,
});

describe('report pages are self-contained', () => {
  it.each(Object.entries(pages()))('%s references nothing outside the page', (_, html) => {
    // Attributes of real tags only: escaped user text (`&lt;img src=x`) is text, not a reference.
    const attrs = [...html.matchAll(/<[a-z][^>]*>/gi)].flatMap((tag) => [...tag[0].matchAll(/\s([a-z:-]+)\s*=\s*("[^"]*"|'[^']*'|[^\s>]+)/gi)]);
    const refs = attrs.filter((a) => /^(src|href|action|srcset|xlink:href|poster|formaction)$/i.test(a[1])).map((a) => a[2].replace(/^["']|["']$/g, ''));
    expect(refs.filter((r) => !r.startsWith('#') && !r.startsWith('data:'))).toEqual([]);
    expect(attrs.length).toBeGreaterThan(10);
    expect(html).not.toMatch(/https?:\/\//);
    expect(html).not.toMatch(/<link\b|@import|url\(\s*['"]?(?!data:)/i);
    expect(html).not.toMatch(/<script[^>]*\ssrc/i);
    // The CSP forbids any load the page might grow later.
    expect(html).toContain(`content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"`);
    expect(html.startsWith('<!doctype html>')).toBe(true);
  });

  it.each(Object.entries(pages()))('%s never prints undefined or NaN', (_, html) => {
    expect(html).not.toMatch(/undefined|NaN|\[object Object\]/);
  });

  it('keeps every row visible without script: only the script hides rows', () => {
    const html = renderHtml(sample);
    expect(html).not.toMatch(/<tr[^>]*\shidden/);
    expect(html).toMatch(/\.controls\{display:none[^}]*\}\s*\.js \.controls\{display:flex\}/);
  });
});

describe('user text is escaped', () => {
  it('shows the fixture question with a script tag as text, never as a tag', () => {
    const html = renderHtml(sample);
    expect(html.match(/<script\b/g)).toHaveLength(1);
    expect(html).toContain('Is a label reading &lt;script&gt;alert(1)&lt;/script&gt; a &quot;safe&quot; pest &amp; disease warning?');
    expect(html).toContain('No: &quot;safe&quot; &amp; &lt;b&gt;bold&lt;/b&gt; claims are not a warning');
    expect(html).toContain('It&#39;s &quot;safe&quot; &amp; sound &lt;/td&gt;&lt;/tr&gt;&lt;tr&gt;&lt;td&gt;injected');
    expect(html).toContain('&lt;img src=x onerror=&quot;alert(2)&quot;&gt;');
    expect(html).not.toMatch(/<img|<b>bold|<\/td><\/tr><tr><td>injected/);
  });

  it('escapes every string a run can carry: ids, names, meta keys and values, rationales, reasons, notices', () => {
    const evil = '<x-evil a="1">&\'';
    const item: EvalItemResult = {
      id: evil,
      question: evil,
      reference: evil,
      meta: { [evil]: evil, topic: evil, n: 1 },
      answers: {
        base: { answer: evil, correct: false, status: 'graded', rationale: evil },
        tuned: { answer: evil, correct: true, status: 'graded', rationale: evil },
      },
      delta: 'fixed',
    };
    const decision: DecisionRecord = {
      id: evil,
      question: evil,
      reference: evil,
      meta: { [evil]: evil },
      level: 'unknown',
      answers: [evil, evil],
      grades: [{ correct: false, score: 0, rationale: evil }],
      decision: 'kept',
      why: evil,
    };
    const d: ReportData = {
      ...sample,
      runId: evil,
      name: evil,
      notices: [evil],
      reason: evil,
      promotion: { promoted: false, reason: evil },
      current: { label: 'current', name: evil, version: 2 },
      train: { ...sample.train!, base: evil, runtime: { device: 'cuda', host: evil, gpus: [{ name: evil, memoryBytes: 1 }] } },
      evaluation: { ...sample.evaluation!, tunedModel: evil },
      results: [item, { ...item, meta: { topic: 'other', n: 2 }, delta: 'both-right' }, { ...item, meta: { topic: 'other', n: 3 } }],
      decisions: [decision],
    };
    const html = renderHtml(d);
    expect(html).not.toContain('<x-evil');
    expect(html).toContain('&lt;x-evil a=&quot;1&quot;&gt;&amp;&#39;');
    const h = renderHistory(
      evil,
      [{ ...history.versions[0], runId: evil, decision: { promoted: true, reason: evil } }],
      [{ ...history.aliases[0], reason: evil, runId: evil }],
      [{ ...history.runs[0], runId: evil, reason: evil }],
    );
    expect(h.html).not.toContain('<x-evil');
    const c = renderComparison({ ...comparison, title: evil, rows: comparison.rows.map((r) => ({ ...r, label: evil, runId: evil })) });
    expect(c.html).not.toContain('<x-evil');
  });

  it('keeps markdown tables intact when answers hold pipes and newlines', () => {
    expect(mdCell('a | b\nc')).toBe('a \\| b c');
    expect(mdCell('x'.repeat(200), 10)).toBe(`${'x'.repeat(9)}…`);
    expect(esc(`<a href="x">'&'</a>`)).toBe('&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;');
  });
});

describe('run report', () => {
  const html = renderHtml(sample);
  const md = renderMarkdown(sample);

  it('lists one row per held-out result and one per training decision', () => {
    expect(bodyRows(html, 'items')).toHaveLength(sample.results.length);
    expect(bodyRows(html, 'decisions')).toHaveLength(sample.decisions.length);
  });

  it('has filter buttons for every delta, decision and level present, and a search box per table', () => {
    for (const delta of new Set(sample.results.map((r) => r.delta))) expect(html).toContain(`data-facet="delta" data-value="${delta}"`);
    for (const decision of new Set(sample.decisions.map((r) => r.decision))) expect(html).toContain(`data-facet="decision" data-value="${decision}"`);
    for (const level of ['known', 'maybeKnown', 'weaklyKnown', 'unknown', 'ungraded']) expect(html).toContain(`data-facet="level" data-value="${level}"`);
    expect(html.match(/<input type="search"/g)).toHaveLength(2);
    const fixed = sample.results.filter((r) => r.delta === 'fixed').length;
    expect(html).toContain(`data-value="fixed" aria-pressed="false">fixed (${fixed})</button>`);
    expect(html.match(/<tr data-delta="fixed"/g)).toHaveLength(fixed);
  });

  it('draws the charts: accuracy with whiskers, knowledge split, loss, per level and per meta group', () => {
    expect(html).toContain('aria-label="accuracy with 95% intervals"');
    expect(html).toContain('aria-label="knowledge levels and training split"');
    expect(html).toContain('aria-label="training loss by step"');
    expect(html).toContain('moving average of 10');
    expect(html).toContain('aria-label="decisions per knowledge level"');
    expect(html).toContain('Accuracy by difficulty');
    expect(html).toContain('Accuracy by topic');
    // One value per item is no grouping.
    expect(html).not.toContain('Accuracy by source');
    expect(html).not.toMatch(/<pre/);
  });

  it('says in markdown what was learnt, what was forgotten, what the gate decided and why', () => {
    const e = sample.evaluation!;
    const p = sample.promotion!;
    expect(md).toContain('# slearn run agri-demo-2026-05-01T06-00-00Z');
    expect(md).toContain('**Outcome: promoted.** Promoted as version 4');
    expect(md).toContain(`Reason: ${p.reason}`);
    expect(md).toContain(`Gain over current: ${points(p.gain!)} (tuned ${pct(e.tuned!.accuracy)} vs ${pct(e.current!.accuracy)} on 60 held-out items).`);
    expect(md).toContain(`forgetting ${pct(p.forgetting!)}`);
    expect(md).toContain(
      `${e.vsReference!.fixed} fixed, ${e.vsReference!.broken} broken (exact McNemar test on ${e.vsReference!.fixed + e.vsReference!.broken} discordant items, ${pValue(e.vsReference!.pValue)})`,
    );
    expect(md).toContain(
      `| tuned (agri-demo-v4-3f9a1c2e) | ${pct(e.tuned!.accuracy)} | ${pct(e.tuned!.low)}–${pct(e.tuned!.high)} | ${e.tuned!.correct} / ${e.tuned!.total} | 2 |`,
    );
    expect(md).toContain(`| Known | ${sample.levels!.known} |`);
    expect(md).toContain(
      `Trained on ${sample.filter!.kept + sample.filter!.replayed} items: ${sample.filter!.kept} the model did not know and ${sample.filter!.replayed} known ones replayed.`,
    );
    expect(md).toContain('200 steps in 12 min 14 s on cuda (bf16, NVIDIA H200, host gpu-worker-2)');
    expect(md).toContain('Resumed from step 120');
    expect(md).toContain('### Fixed by tuning (5 of 12)');
    expect(md).toContain('## Notices');
    expect(md).not.toMatch(/undefined|NaN/);
  });

  it('says a refused run was refused, and why', () => {
    const refused: ReportData = {
      ...sample,
      promotion: { promoted: false, reason: 'refused: forgot 17.5% of 40 known items (at most 10.0% allowed)', version: 5, gain: 0.02, forgetting: 0.175 },
    };
    expect(renderMarkdown(refused)).toContain('**Outcome: refused.** Refused by the promotion gate (recorded as version 5)');
    expect(renderMarkdown(refused)).toContain('forgetting 17.5%');
    expect(renderHtml(refused)).toContain('<span class="badge bad">refused</span>');
  });

  it('does not call a baseline run refused: it was never up for promotion', () => {
    const baseline: ReportData = { ...sample, promotion: { promoted: false, reason: 'a full baseline run: compared, never promoted' } };
    expect(renderMarkdown(baseline)).toContain('**Outcome: not promoted.** Not promoted.\n\nReason: a full baseline run: compared, never promoted');
  });

  it('renders a run that ended early with nothing new', () => {
    const m = renderMarkdown(nothingNew);
    expect(m).toContain('**Outcome: nothing new.** Ended early: nothing new to learn.');
    expect(m).toContain(`Reason: ${nothingNew.reason}`);
    expect(m).toContain('Nothing was answered, trained or evaluated in this run.');
    expect(m).not.toMatch(/## (Training|Evaluation)|undefined|NaN/);
    const h = renderHtml(nothingNew);
    expect(h).toContain('<span class="badge neutral">nothing new</span>');
    expect(h).not.toMatch(/<table|<svg/);
  });

  it('renders a bare run with every optional field absent, and one where training was skipped', () => {
    const bare: ReportData = {
      runId: 'r',
      name: 'n',
      counts: { items: 0, answered: 0, graded: 0, known: 0, unknown: 0, ungradeable: 0 },
      notices: [],
      losses: [],
      results: [],
      decisions: [],
    };
    for (const out of [renderMarkdown(bare), renderHtml(bare)]) expect(out).not.toMatch(/undefined|NaN/);
    expect(renderMarkdown(bare)).toContain('No promotion decision was recorded');
    const skipped: ReportData = {
      ...sample,
      train: { skipped: true, base: 'b', steps: 0, resumedFromStep: 0, trainSeconds: 0 },
      evaluation: { items: 60, base: accuracy(30, 60), passes: [], results: sample.evaluation!.results },
      promotion: { promoted: false, reason: 'nothing to train on: the model already knew every item' },
      current: undefined,
      losses: [],
      results: sample.results.map((r) => ({ ...r, answers: { base: r.answers.base }, delta: 'base-only' as const })),
    };
    const m = renderMarkdown(skipped);
    expect(m).toContain('**Outcome: no training.**');
    expect(m).toContain('Training skipped');
    expect(m).not.toMatch(/undefined|NaN|Gain/);
    const h = renderHtml(skipped);
    expect(h).not.toMatch(/undefined|NaN|training loss by step/);
    expect(bodyRows(h, 'items')).toHaveLength(60);
  });
});

describe('a judged run', () => {
  // The sample run as if graded by a judge: one greedy answer the rule grader refused, one it accepted that the judge refused.
  const decisions: DecisionRecord[] = sample.decisions.map((r, i) => ({
    ...r,
    grades: r.grades.map((g, k) => (k === 0 ? { ...g, rule: i === 0 ? !g.correct : i === 1 ? !g.correct : g.correct } : g)),
  }));
  const first = decisions[0];
  const agreementOf = {
    items: 20,
    table: { bothCorrect: 6, onlyA: 5, onlyB: 1, bothWrong: 8 },
    observed: 0.7,
    expected: 0.5,
    kappa: 0.4,
    low: 0.05,
    high: 0.75,
    words:
      "the judge agrees with the rule grader on 70.0% of 20 items, κ 0.40 (95% CI 0.05 to 0.75, fair); 5 correct only for the judge, 1 only for the rule grader. Agreement this low means the judge's accuracy is not to be trusted on its own: read it beside the rule grader's.",
    examples: {
      judgeOnly: [
        {
          id: first.id,
          question: 'Which gas do legumes fix?',
          reference: 'nitrogen',
          answer: 'they fix a gas | from air',
          judge: true,
          rationale: 'close enough',
        },
      ],
      ruleOnly: [],
    },
  };
  const judged: ReportData = { ...sample, decisions, filter: { ...sample.filter!, agreement: agreementOf } };

  it('says how far the judge agrees with the rule grader, with the 2×2 table and the disagreements', () => {
    const md = renderMarkdown(judged);
    expect(md).toContain('### The judge against the rule grader');
    expect(md).toContain('κ 0.40 (95% CI 0.05 to 0.75, fair)');
    expect(md).toContain('not to be trusted on its own');
    expect(md).toContain('| judge: right | 6 | 5 |');
    expect(md).toContain('| judge: wrong | 1 | 8 |');
    expect(md).toContain('#### Right for the judge only');
    expect(md).toContain('they fix a gas \\| from air');
    expect(renderMarkdown(sample)).not.toContain('judge against the rule grader');
  });

  it('lets the reader filter the training decisions by disagreement', () => {
    const html = renderHtml(judged);
    expect(html).toContain('κ 0.40');
    const disagree = decisions.filter((r) => r.grades[0] && r.grades[0].rule !== undefined && r.grades[0].rule !== r.grades[0].correct);
    const judgeOnly = disagree.filter((r) => r.grades[0].correct).length;
    const ruleOnly = disagree.length - judgeOnly;
    expect(disagree).toHaveLength(2);
    const rows = (value: string) => (html.match(new RegExp(`<tr [^>]*data-graders="${value}"`, 'g')) ?? []).length;
    expect([rows('judge only'), rows('rule only')]).toEqual([judgeOnly, ruleOnly]);
    expect(rows('agree')).toBe(decisions.filter((r) => r.grades[0]?.rule !== undefined).length - 2);
    expect(html).toContain('data-facet="graders" data-value="agree"');
    expect(renderHtml(sample)).not.toContain('data-facet="graders"');
  });
});

describe('history page', () => {
  const { markdown, html } = renderHistory(history.name, history.versions, history.aliases, history.runs);

  it('names the version in service and lists every version, move and run', () => {
    expect(markdown).toContain('Current model: version 4, promoted by hand on 2026-04-22 10:00 UTC.');
    for (const v of history.versions) expect(markdown).toContain(`| v${v.version} | ${v.runId} |`);
    for (const r of history.runs) expect(markdown).toContain(`| ${r.runId} |`);
    expect(markdown).toContain('| 4 | 2026-04-21 09:30 UTC | rollback | v4 | v3 |');
    expect(bodyRows(html, 'runs')).toHaveLength(history.runs.length);
    for (const o of ['promoted', 'refused', 'nothing-new', 'no-training']) expect(html).toContain(`data-facet="outcome" data-value="${o}"`);
  });

  it('shows each version’s tuned accuracy with its interval and its retention', () => {
    for (const v of history.versions) {
      const t = v.evaluation.tuned;
      expect(markdown).toContain(`${pct(t.accuracy)} (${pct(t.low)}–${pct(t.high)})`);
      expect(html).toContain(`tuned accuracy: ${pct(t.accuracy)} (95% CI ${pct(t.low)}–${pct(t.high)})`);
      expect(html).toContain(`retention: ${pct(v.evaluation.retention!.accuracy)}`);
    }
    expect(html).toContain('aria-label="accuracy and retention per version"');
    expect(html.match(/>current<\/text>/g)).toHaveLength(1);
  });

  it('renders a config with no history yet', () => {
    const empty = renderHistory('fresh', [], [], []);
    expect(empty.markdown).toContain('Current model: the base model (no version has been promoted).');
    expect(empty.html).toContain('No versions yet');
    expect(empty.html).not.toMatch(/undefined|NaN|Infinity/);
  });
});

describe('comparison page', () => {
  const { markdown, html } = renderComparison(comparison);

  it('puts self-learning and its baselines side by side with the right numbers', () => {
    expect(markdown).toContain('| self-learning | 46 | 36 | 3 min 32 s | 65.0% | 52.4%–75.8% (39/60) | 92.5% (37/40) | – | – |');
    expect(markdown).toContain('| full | 98 | 75 | 7 min 36 s | 66.7% |');
    expect(markdown).toContain('| 5 / 4 | p = 1.0 |');
    expect(markdown).toContain('| 2 / 10 | p = 0.039 |');
    expect(markdown).toContain(
      'Against full: self-learning trained on 46 items instead of 98 (46.9%), in 3 min 32 s instead of 7 min 36 s (46.6% of the time), accuracy −1.7 points (p = 1.0).',
    );
    expect(markdown).toContain('Base model without tuning: 38.3% (95% CI 27.1%–51.0%, 23/60)');
  });

  it('draws accuracy with intervals, training time and retention', () => {
    expect(html).toContain('aria-label="accuracy per method with 95% intervals"');
    expect(html).toContain('aria-label="training seconds per method"');
    expect(html).toContain('aria-label="retention per method"');
    for (const r of comparison.rows) expect(html).toContain(`${r.label}: ${pct(r.tuned!.accuracy)}`);
  });
});

describe('helpers', () => {
  it('movingAverage is a trailing mean over the window', () => {
    const pts = [1, 2, 3, 4, 5].map((loss, i) => ({ step: i + 1, loss }));
    expect(movingAverage(pts, 3).map((p) => p.loss)).toEqual([1, 1.5, 2, 3, 4]);
    expect(movingAverage(pts, 1)).toEqual(pts);
    expect(movingAverage(pts, 10).at(-1)!.loss).toBe(3);
    expect(movingAverage([], 5)).toEqual([]);
    expect(movingAverage(pts, 3).map((p) => p.step)).toEqual([1, 2, 3, 4, 5]);
    expect(smoothingWindow(200)).toBe(10);
    expect(smoothingWindow(5)).toBe(1);
  });

  it('groupByMeta keeps fields with a few values and counts graded answers per model', () => {
    const r = (i: number, meta: Record<string, unknown>, base: boolean, tuned: boolean | 'ungradeable'): EvalItemResult => ({
      id: `i${i}`,
      question: 'q',
      reference: 'a',
      meta,
      answers: {
        base: { answer: '', correct: base, status: 'graded' },
        tuned: tuned === 'ungradeable' ? { answer: '', correct: false, status: 'ungradeable' } : { answer: '', correct: tuned, status: 'graded' },
      },
      delta: 'both-wrong',
    });
    const results = [
      r(1, { topic: 'soil', id: 'a', same: 'x', n: 10 }, true, true),
      r(2, { topic: 'soil', id: 'b', same: 'x', n: 2 }, false, true),
      r(3, { topic: 'pests', id: 'c', same: 'x', n: 2 }, false, 'ungradeable'),
      r(4, { id: 'd', same: 'x', n: 10 }, false, false),
    ];
    const groups = groupByMeta(results);
    expect(groups.map((g) => g.key)).toEqual(['n', 'topic']);
    const topic = groups.find((g) => g.key === 'topic')!;
    expect(topic.groups.map((g) => g.value)).toEqual(['(none)', 'pests', 'soil']);
    expect(topic.groups[2]).toEqual({ value: 'soil', items: 2, models: { base: { correct: 1, graded: 2 }, tuned: { correct: 2, graded: 2 } } });
    expect(topic.groups[1].models.tuned).toBeUndefined();
    // Numeric values sort as numbers.
    expect(groups[0].groups.map((g) => g.value)).toEqual(['2', '10']);
    const many = Array.from({ length: 50 }, (_, i) => r(i, { bucket: `b${i % 21}` }, true, true));
    expect(groupByMeta(many)).toEqual([]);
    expect(groupByMeta(many, 25).map((g) => g.groups.length)).toEqual([21]);
  });

  it('decisionsByLevel counts decisions per knowledge level, ungraded items apart', () => {
    const d = (level: DecisionRecord['level'], decision: DecisionRecord['decision']): DecisionRecord => ({
      id: 'x',
      question: 'q',
      reference: 'a',
      answers: [],
      grades: [],
      decision,
      why: '',
      ...(level ? { level } : {}),
    });
    const rows = decisionsByLevel([d('known', 'dropped'), d('known', 'replayed'), d('unknown', 'kept'), d(undefined, 'ungradeable')]);
    expect(rows.map((r) => [r.level, r.total])).toEqual([
      ['known', 2],
      ['unknown', 1],
      ['ungraded', 1],
    ]);
    expect(rows[0].decisions).toEqual({ kept: 0, replayed: 1, dropped: 1, ungradeable: 0 });
  });

  it('axes and formats', () => {
    expect(niceTicks(0, 2.4)).toEqual([0, 0.5, 1, 1.5, 2, 2.5]);
    expect(niceTicks(1, 200, 6)).toEqual([0, 50, 100, 150, 200]);
    expect(timeTicks(456).ticks).toEqual([0, 120, 240, 360, 480]);
    expect(timeTicks(456).format(240)).toBe('4 min');
    expect(duration(12.34)).toBe('12.3 s');
    expect(duration(734.2)).toBe('12 min 14 s');
    expect(duration(7260)).toBe('2 h 1 min');
    expect(points(0.175)).toBe('+17.5 points');
    expect(points(-0.017)).toBe('−1.7 points');
    expect(pValue(0.0004)).toBe('p < 0.001');
    expect(pValue(0.0131)).toBe('p = 0.013');
  });
});

describe('loss chart of a long training', () => {
  it('draws 200,000 logged steps without overflowing the stack, thinned to what a chart can show', () => {
    const points = Array.from({ length: 200_000 }, (_, i) => ({ step: i + 1, loss: 2 / Math.sqrt(i + 1) }));
    const svg = lossChart(points, smoothingWindow(points.length));
    const paths = [...svg.matchAll(/<path d="([^"]+)"/g)].map((m) => m[1].split(/[ML]/).filter(Boolean).length);
    expect(paths).toHaveLength(2);
    for (const n of paths) expect(n).toBeLessThanOrEqual(1200);
    expect(svg).toContain('>200000<');
  });
});
