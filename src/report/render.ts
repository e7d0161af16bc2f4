import { pct } from '../metrics';
import type { Accuracy, Counts, EvalResult, FilterResult, TrainResult } from '../schemas/run';

export interface ReportData {
  runId: string;
  name: string;
  counts: Counts;
  filter: FilterResult;
  train: TrainResult;
  evaluation: EvalResult;
  losses: { step: number; loss: number }[];
  examples: { question: string; reference: string; base: string; tuned?: string; delta: string }[];
  /** Optional comparison with fine-tuning on the whole dataset (`slearn demo --compare full`). */
  compare?: { label: string; train: TrainResult; evaluation: EvalResult };
}

const esc = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
const ci = (a: Accuracy) => `${pct(a.accuracy)} (95% CI ${pct(a.low)}–${pct(a.high)}, ${a.correct}/${a.total}${a.ungradeable ? `, ${a.ungradeable} ungradeable` : ''})`;

export function renderMarkdown(d: ReportData): string {
  const e = d.evaluation;
  const lines = [
    `# slearn run ${d.runId}`,
    '',
    `Config **${d.name}**. ${d.counts.items} items answered and graded.`,
    '',
    '## What the model already knew',
    '',
    '| known (dropped) | unknown (trained on) | replayed known | ungradeable |',
    '|---:|---:|---:|---:|',
    `| ${d.filter.dropped} | ${d.filter.kept} | ${d.filter.replayed} | ${d.filter.ungradeable} |`,
    '',
    '## Training',
    '',
    d.train.skipped
      ? 'Skipped: the model already knew every item.'
      : `${d.train.steps} steps on ${d.filter.kept + d.filter.replayed} items in ${d.train.trainSeconds.toFixed(1)} s (base \`${d.train.base}\`${d.train.resumedFromStep ? `, resumed from step ${d.train.resumedFromStep}` : ''}). Final loss ${movingAverage(d.losses, 10).at(-1)?.loss.toFixed(3) ?? 'n/a'} (mean of the last 10 steps).`,
    '',
    '## Evaluation',
    '',
    `| model | accuracy on ${e.items} items |`,
    '|---|---|',
    `| base | ${ci(e.base)} |`,
    ...(e.tuned ? [`| tuned (\`${e.tunedModel}\`) | ${ci(e.tuned)} |`] : []),
    '',
    e.tuned ? `Fixed by tuning: ${e.fixed}. Broken by tuning: ${e.broken}.` : '',
  ];
  if (d.compare) {
    const c = d.compare;
    const ratio = c.train.trainSeconds ? d.train.trainSeconds / c.train.trainSeconds : NaN;
    const diff = (e.tuned?.accuracy ?? e.base.accuracy) - (c.evaluation.tuned?.accuracy ?? c.evaluation.base.accuracy);
    lines.push(
      '',
      `## Self-learning vs ${c.label}`,
      '',
      '| | items trained | steps | train seconds | tuned accuracy |',
      '|---|---:|---:|---:|---|',
      `| self-learning | ${d.filter.kept + d.filter.replayed} | ${d.train.steps} | ${d.train.trainSeconds.toFixed(1)} | ${e.tuned ? ci(e.tuned) : 'n/a'} |`,
      `| ${c.label} | ${d.counts.items} | ${c.train.steps} | ${c.train.trainSeconds.toFixed(1)} | ${c.evaluation.tuned ? ci(c.evaluation.tuned) : 'n/a'} |`,
      '',
      `Training-time ratio (self-learning / ${c.label}): **${ratio.toFixed(2)}**. Accuracy difference: **${(diff * 100).toFixed(1)} points**.`,
    );
  }
  if (d.examples.length) {
    lines.push('', '## Examples', '', '| question | reference | base | tuned | |', '|---|---|---|---|---|');
    for (const x of d.examples) lines.push(`| ${x.question.replace(/\|/g, '\\|')} | ${x.reference} | ${x.base.replace(/\|/g, '\\|')} | ${(x.tuned ?? '').replace(/\|/g, '\\|')} | ${x.delta} |`);
  }
  return lines.join('\n') + '\n';
}

function bars(title: string, rows: { label: string; value: number; low?: number; high?: number; color: string }[]): string {
  const w = 420, rowH = 34, left = 130, h = rows.length * rowH + 40;
  const x = (v: number) => left + v * (w - left - 50);
  const body = rows
    .map((r, i) => {
      const y = 30 + i * rowH;
      const whisker = r.low !== undefined ? `<line x1="${x(r.low)}" x2="${x(r.high!)}" y1="${y + 11}" y2="${y + 11}" stroke="#222" stroke-width="2"/>` : '';
      return `<text x="${left - 8}" y="${y + 15}" text-anchor="end" font-size="12">${esc(r.label)}</text><rect x="${left}" y="${y}" width="${Math.max(1, x(r.value) - left)}" height="22" fill="${r.color}"/>${whisker}<text x="${x(Math.max(r.value, r.high ?? 0)) + 6}" y="${y + 15}" font-size="12">${pct(r.value)}</text>`;
    })
    .join('');
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" role="img"><text x="0" y="16" font-size="14" font-weight="bold">${esc(title)}</text>${body}</svg>`;
}

export function movingAverage(points: { step: number; loss: number }[], window: number): { step: number; loss: number }[] {
  return points.map((p, i) => {
    const slice = points.slice(Math.max(0, i - window + 1), i + 1);
    return { step: p.step, loss: slice.reduce((a, b) => a + b.loss, 0) / slice.length };
  });
}

function lossCurve(points: { step: number; loss: number }[]): string {
  if (points.length < 2) return '<p>No loss curve (fewer than two logged steps).</p>';
  const w = 420, h = 220, l = 40, b = 30, t = 25;
  const maxS = Math.max(...points.map((p) => p.step)), minS = Math.min(...points.map((p) => p.step));
  const maxL = Math.max(...points.map((p) => p.loss)), minL = Math.min(0, ...points.map((p) => p.loss));
  const px = (s: number) => l + ((s - minS) / Math.max(1, maxS - minS)) * (w - l - 10);
  const py = (v: number) => t + (1 - (v - minL) / Math.max(1e-9, maxL - minL)) * (h - t - b);
  const path = points.map((p, i) => `${i ? 'L' : 'M'}${px(p.step).toFixed(1)},${py(p.loss).toFixed(1)}`).join(' ');
  // Per-step losses are noisy at small batch sizes; the moving average shows the trend.
  const avg = movingAverage(points, 10);
  const trend = avg.map((p, i) => `${i ? 'L' : 'M'}${px(p.step).toFixed(1)},${py(p.loss).toFixed(1)}`).join(' ');
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" role="img"><text x="0" y="16" font-size="14" font-weight="bold">Training loss</text><line x1="${l}" y1="${h - b}" x2="${w - 10}" y2="${h - b}" stroke="#999"/><line x1="${l}" y1="${t}" x2="${l}" y2="${h - b}" stroke="#999"/><text x="${l - 4}" y="${t + 4}" text-anchor="end" font-size="10">${maxL.toFixed(2)}</text><text x="${l - 4}" y="${h - b}" text-anchor="end" font-size="10">${minL.toFixed(2)}</text><text x="${w - 10}" y="${h - 10}" text-anchor="end" font-size="10">step ${maxS}</text><path d="${path}" fill="none" stroke="#9dbcf0" stroke-width="1"/><path d="${trend}" fill="none" stroke="#1a4fa8" stroke-width="2.5"/><text x="${w - 10}" y="${t - 8}" text-anchor="end" font-size="10">per step (light), moving average of 10 (dark)</text></svg>`;
}

export function renderHtml(d: ReportData): string {
  const e = d.evaluation;
  const accRows = [{ label: 'base', value: e.base.accuracy, low: e.base.low, high: e.base.high, color: '#9aa5b1' }];
  if (e.tuned) accRows.push({ label: 'self-learning', value: e.tuned.accuracy, low: e.tuned.low, high: e.tuned.high, color: '#2a6fdb' });
  if (d.compare?.evaluation.tuned) {
    const c = d.compare.evaluation.tuned;
    accRows.push({ label: d.compare.label, value: c.accuracy, low: c.low, high: c.high, color: '#e0a030' });
  }
  const total = Math.max(1, d.counts.items);
  const split = bars('Known / unknown split of the dataset', [
    { label: `known (${d.filter.dropped + d.filter.replayed})`, value: (d.filter.dropped + d.filter.replayed) / total, color: '#4caf50' },
    { label: `unknown (${d.filter.kept})`, value: d.filter.kept / total, color: '#e53935' },
    { label: `ungradeable (${d.filter.ungradeable})`, value: d.filter.ungradeable / total, color: '#999' },
  ]);
  const md = renderMarkdown(d);
  return `<!doctype html><html><head><meta charset="utf-8"><title>slearn ${esc(d.runId)}</title>
<style>body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}.charts{display:flex;flex-wrap:wrap;gap:24px}pre{white-space:pre-wrap;background:#f6f8fa;padding:1em}</style></head>
<body><h1>slearn run ${esc(d.runId)}</h1>
<div class="charts">${bars(`Accuracy on ${e.items} evaluation items (95% CI)`, accRows)}${split}${lossCurve(d.losses)}</div>
<h2>Details</h2><pre>${esc(md)}</pre></body></html>
`;
}
