import { pct } from '../metrics';
import { barChart, COLORS, timeTicks, type Bar } from './charts';
import type { ComparisonData } from './data';
import { esc, mdCell } from './escape';
import { count, duration, interval, points, pValue, share, withCi } from './format';
import { cards, figure, page, table, type Column } from './page';

type Row = ComparisonData['rows'][number];

const PALETTE = [COLORS.tuned, '#c77c0e', '#7b5ea7', '#3a9d9b', '#b5527a'];

/** The self-learning row: the one not paired against itself. */
const selfRow = (c: ComparisonData): Row | undefined => c.rows.find((r) => !r.vsSelf) ?? c.rows[0];

const HEADS = ['method', 'trained items', 'steps', 'train time', 'tuned accuracy', '95% CI', 'retention', 'fixed / broken vs self-learning', 'McNemar'];

function cells(r: Row): string[] {
  return [
    r.label,
    count(r.trainedItems),
    count(r.steps),
    duration(r.trainSeconds),
    r.tuned ? pct(r.tuned.accuracy) : '–',
    r.tuned ? `${interval(r.tuned)} (${r.tuned.correct}/${r.tuned.total})` : '–',
    r.retention ? `${pct(r.retention.accuracy)} (${r.retention.correct}/${r.retention.total})` : '–',
    r.vsSelf ? `${r.vsSelf.fixed} / ${r.vsSelf.broken}` : '–',
    r.vsSelf ? pValue(r.vsSelf.pValue) : '–',
  ];
}

/** What self-learning saved against one baseline, and what it cost in accuracy. */
function versusLine(self: Row, other: Row): string {
  const parts = [
    `Against ${other.label}: self-learning trained on ${count(self.trainedItems)} items instead of ${count(other.trainedItems)} (${share(self.trainedItems, other.trainedItems)})`,
  ];
  parts.push(`in ${duration(self.trainSeconds)} instead of ${duration(other.trainSeconds)} (${share(self.trainSeconds, other.trainSeconds)} of the time)`);
  if (self.tuned && other.tuned)
    parts.push(`accuracy ${points(self.tuned.accuracy - other.tuned.accuracy)}${other.vsSelf ? ` (${pValue(other.vsSelf.pValue)})` : ''}`);
  return `${parts.join(', ')}.`;
}

const HTML_COLS: Column[] = [
  { head: 'method', cls: 'id' },
  { head: 'trained items', num: true },
  { head: 'training', cls: 'nowrap' },
  { head: 'tuned accuracy (95% CI)', cls: 'nowrap' },
  { head: 'retention', cls: 'nowrap' },
  { head: 'fixed', num: true },
  { head: 'broken', num: true },
  { head: 'McNemar', cls: 'nowrap' },
];

const muted = (s: string) => `<br><span class="na">${esc(s)}</span>`;

function htmlRow(r: Row): string[] {
  return [
    `<b>${esc(r.label)}</b><div class="tags"><span>${esc(r.runId)}</span></div>`,
    esc(count(r.trainedItems)),
    `${esc(count(r.steps))} steps${muted(duration(r.trainSeconds))}`,
    r.tuned ? `${esc(pct(r.tuned.accuracy))}${muted(`${interval(r.tuned)} · ${r.tuned.correct}/${r.tuned.total}`)}` : '–',
    r.retention ? `${esc(pct(r.retention.accuracy))}${muted(`${r.retention.correct}/${r.retention.total} known items`)}` : '–',
    r.vsSelf ? String(r.vsSelf.fixed) : '–',
    r.vsSelf ? String(r.vsSelf.broken) : '–',
    r.vsSelf ? esc(pValue(r.vsSelf.pValue)) : '–',
  ];
}

const FOOTNOTE =
  'Against self-learning, on the same held-out items: fixed: items this method answers right and self-learning wrong; broken: the reverse. McNemar: exact two-sided test on those discordant items.';

/** Self-learning against its baselines (full, random) on the same held-out items. */
export function renderComparison(c: ComparisonData): { markdown: string; html: string } {
  const self = selfRow(c);
  const others = c.rows.filter((r) => r !== self);
  const lines = self ? others.map((o) => versusLine(self, o)) : [];
  const intro = `${count(c.items)} held-out items. Base model without tuning: ${withCi(c.base)}.`;

  const md = [
    `# ${c.title}`,
    '',
    intro,
    '',
    `| ${HEADS.join(' | ')} |`,
    `|${HEADS.map((_, i) => (i ? '---:' : '---')).join('|')}|`,
    ...c.rows.map(
      (r) =>
        `| ${cells(r)
          .map((x) => mdCell(x))
          .join(' | ')} |`,
    ),
    '',
    FOOTNOTE,
  ];
  if (lines.length) md.push('', ...lines.flatMap((l) => [l, '']).slice(0, -1));

  const colour = (i: number) => PALETTE[i % PALETTE.length];
  const acc: Bar[] = [{ label: 'base', note: 'no tuning', value: c.base.accuracy, low: c.base.low, high: c.base.high, color: COLORS.base }];
  c.rows.forEach(
    (r, i) =>
      r.tuned &&
      acc.push({
        label: r.label,
        note: `${count(r.trainedItems)} items trained`,
        value: r.tuned.accuracy,
        low: r.tuned.low,
        high: r.tuned.high,
        color: colour(i),
      }),
  );
  const ret: Bar[] = c.rows.flatMap((r, i) =>
    r.retention
      ? [
          {
            label: r.label,
            note: `${r.retention.total} known items`,
            value: r.retention.accuracy,
            low: r.retention.low,
            high: r.retention.high,
            color: colour(i),
          },
        ]
      : [],
  );
  const time: Bar[] = c.rows.map((r, i) => ({ label: r.label, note: `${count(r.steps)} steps`, value: r.trainSeconds, color: colour(i) }));
  const { ticks, format: tickFormat } = timeTicks(Math.max(1, ...c.rows.map((r) => r.trainSeconds)));
  const axis = { ticks, tickFormat };
  const figs = [
    figure(`Accuracy on ${count(c.items)} held-out items`, barChart('accuracy per method with 95% intervals', acc), 'whiskers: 95% Wilson interval'),
    figure('Training time', barChart('training seconds per method', time, { percent: false, format: duration, ...axis })),
    ret.length ? figure('Retention', barChart('retention per method', ret), 'items the model knew, asked again after tuning') : '',
  ];
  const body = [
    `<h1>${esc(c.title)}</h1>`,
    `<p class="sub">${esc(intro)}</p>`,
    cards(
      c.rows.map((r) => ({
        k: r.label,
        v: r.tuned ? pct(r.tuned.accuracy) : '–',
        n: `${count(r.trainedItems)} items · ${duration(r.trainSeconds)}${r.vsSelf ? ` · ${pValue(r.vsSelf.pValue)} vs self-learning` : ''}`,
      })),
    ),
    lines.length ? `<div class="verdict neutral">${lines.map((l) => esc(l)).join('<br>')}</div>` : '',
    `<h2>Methods</h2>${table(HTML_COLS, c.rows.map(htmlRow))}<p class="note">${esc(FOOTNOTE)}</p>`,
    `<h2>Charts</h2><div class="charts">${figs.join('')}</div>`,
    `<footer>slearn comparison. A self-contained page: it loads nothing from the network.</footer>`,
  ];
  return { markdown: `${md.join('\n')}\n`, html: page(c.title, body.filter(Boolean).join('\n')) };
}
