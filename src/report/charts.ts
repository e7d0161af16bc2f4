import { pct } from '../metrics';
import { esc } from './escape';
import { extent, movingAverage, thin, type Point } from './series';

/** Points drawn per line: more than the chart's width in pixels adds bytes, not detail. */
const MAX_DRAWN = 1200;

/** Colours shared by every chart and table, so a model keeps its colour across the page. */
export const COLORS = {
  base: '#8a94a3',
  current: '#c77c0e',
  tuned: '#2563c9',
  retention: '#2e8b57',
  known: '#2e8b57',
  maybeKnown: '#8cc084',
  weaklyKnown: '#f0a83a',
  unknown: '#d2463a',
  kept: '#2563c9',
  replayed: '#7aa7e8',
  dropped: '#c9ced6',
  ungradeable: '#6b7280',
  ungraded: '#6b7280',
  grid: '#e4e7ec',
  axis: '#9aa3af',
  text: '#1d2330',
  muted: '#5b6472',
} as const;

const f1 = (n: number) => (Math.round(n * 10) / 10).toString();

/** SVG text does not wrap: a label longer than its margin is cut, and the full text stays in a tooltip. */
const clip = (s: string, max: number) => (s.length > max ? `${s.slice(0, max - 1)}…` : s);

function svg(w: number, h: number, label: string, body: string): string {
  return `<svg viewBox="0 0 ${w} ${h}" width="${w}" height="${h}" role="img" aria-label="${esc(label)}" font-size="12">${body}</svg>`;
}

function text(x: number, y: number, s: string, attrs = ''): string {
  return `<text x="${f1(x)}" y="${f1(y)}"${attrs ? ` ${attrs}` : ''}>${esc(s)}</text>`;
}

/** Round tick values covering [min, max]: axes people can read at a glance. */
export function niceTicks(min: number, max: number, count = 5): number[] {
  if (!(max > min)) max = min + 1;
  const raw = (max - min) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const ticks: number[] = [];
  for (let v = Math.floor(min / step) * step; v <= max + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  if (ticks[ticks.length - 1] < max) ticks.push(Number((ticks[ticks.length - 1] + step).toPrecision(12)));
  return ticks;
}

export interface Bar {
  label: string;
  /** A second, muted line under the label (counts, a version). */
  note?: string;
  value: number;
  low?: number;
  high?: number;
  color: string;
}

/**
 * Horizontal bars on a shared axis, with interval whiskers where given. Accuracy charts start
 * at 0 and end at 100%, so a 2-point gain looks like 2 points.
 */
export function barChart(
  label: string,
  rows: Bar[],
  opts: { format?: (v: number) => string; percent?: boolean; ticks?: number[]; tickFormat?: (v: number) => string } = {},
): string {
  const percent = opts.percent ?? true;
  const format = opts.format ?? ((v: number) => pct(v));
  const top = Math.max(...rows.map((r) => Math.max(r.value, r.high ?? 0)), 1e-9);
  const ticks = opts.ticks ?? (percent ? [0, 0.25, 0.5, 0.75, 1] : niceTicks(0, top));
  const tickFormat = opts.tickFormat ?? (percent ? (t: number) => `${Math.round(t * 100)}%` : format);
  const max = percent ? 1 : ticks[ticks.length - 1];
  const W = 560,
    left = 170,
    right = 74,
    rowH = 36,
    pad = 6,
    axisH = 22;
  const H = pad + rows.length * rowH + axisH;
  const x = (v: number) => left + (Math.min(max, Math.max(0, v)) / max) * (W - left - right);
  const grid = ticks
    .map(
      (t) =>
        `<line x1="${f1(x(t))}" x2="${f1(x(t))}" y1="${pad}" y2="${H - axisH}" stroke="${COLORS.grid}"/>${text(x(t), H - 6, tickFormat(t), `text-anchor="middle" fill="${COLORS.muted}" font-size="11"`)}`,
    )
    .join('');
  const bars = rows
    .map((r, i) => {
      const y = pad + i * rowH + 6;
      const bh = 20;
      const cy = y + bh / 2;
      let out = `<rect x="${left}" y="${y}" width="${f1(Math.max(1, x(r.value) - left))}" height="${bh}" rx="2" fill="${r.color}"><title>${esc(`${r.label}: ${format(r.value)}`)}</title></rect>`;
      if (r.low !== undefined && r.high !== undefined) {
        const [a, b] = [x(r.low), x(r.high)];
        out += `<g stroke="${COLORS.text}" stroke-width="1.5"><line x1="${f1(a)}" x2="${f1(b)}" y1="${cy}" y2="${cy}"/><line x1="${f1(a)}" x2="${f1(a)}" y1="${cy - 6}" y2="${cy + 6}"/><line x1="${f1(b)}" x2="${f1(b)}" y1="${cy - 6}" y2="${cy + 6}"/></g>`;
      }
      const labelY = r.note ? cy - 2 : cy + 4;
      out += `<g><title>${esc(r.note ? `${r.label}: ${r.note}` : r.label)}</title>${text(left - 10, labelY, clip(r.label, 22), 'text-anchor="end" font-weight="600"')}`;
      out += `${r.note ? text(left - 10, cy + 12, clip(r.note, 27), `text-anchor="end" fill="${COLORS.muted}" font-size="11"`) : ''}</g>`;
      out += text(x(Math.max(r.value, r.high ?? 0)) + 6, cy + 4, format(r.value));
      return out;
    })
    .join('');
  return svg(W, H, label, grid + bars);
}

export interface Segment {
  label: string;
  value: number;
  color: string;
}

/**
 * Bars split into parts, one row each, with a legend. `share` scales every row to 100%; `count`
 * scales rows to the largest, so the bars also compare sizes.
 */
export function stackedBars(label: string, rows: { label: string; segments: Segment[] }[], scale: 'share' | 'count' = 'share'): string {
  const W = 560,
    left = 120,
    right = 50,
    rowH = 32,
    bh = 22;
  const legend = [...new Map(rows.flatMap((r) => r.segments).map((s) => [s.label, s.color])).entries()];
  const perLine = 4;
  const legendH = Math.ceil(legend.length / perLine) * 20 + 6;
  const H = rows.length * rowH + legendH + 4;
  const maxTotal = Math.max(1, ...rows.map((r) => r.segments.reduce((a, s) => a + s.value, 0)));
  const body = rows
    .map((r, i) => {
      const total = r.segments.reduce((a, s) => a + s.value, 0);
      const width = (W - left - right) * (scale === 'share' ? (total ? 1 : 0) : total / maxTotal);
      const y = 4 + i * rowH;
      let x = left;
      let out = text(left - 10, y + bh / 2 + 4, clip(r.label, 16), 'text-anchor="end" font-weight="600"');
      for (const s of r.segments) {
        if (s.value <= 0) continue;
        const w = total ? (s.value / total) * width : 0;
        out += `<rect x="${f1(x)}" y="${y}" width="${f1(w)}" height="${bh}" fill="${s.color}"><title>${esc(`${s.label}: ${s.value} (${pct(s.value / total)})`)}</title></rect>`;
        if (w > 26) out += text(x + w / 2, y + bh / 2 + 4, String(s.value), `text-anchor="middle" fill="${contrast(s.color)}" font-size="11"`);
        x += w;
      }
      out += text(left + width + 6, y + bh / 2 + 4, String(total), `fill="${COLORS.muted}"`);
      return out;
    })
    .join('');
  const colW = (W - 20) / perLine;
  const keys = legend
    .map(([name, color], i) => {
      const lx = 10 + (i % perLine) * colW;
      const ly = rows.length * rowH + 12 + Math.floor(i / perLine) * 20;
      return `<rect x="${f1(lx)}" y="${ly}" width="12" height="12" rx="2" fill="${color}"/>${text(lx + 18, ly + 10, name)}`;
    })
    .join('');
  return svg(W, H, label, body + keys);
}

/** White text on dark fills, dark text on light ones. */
function contrast(hex: string): string {
  const n = parseInt(hex.slice(1), 16);
  const lum = (0.299 * ((n >> 16) & 255) + 0.587 * ((n >> 8) & 255) + 0.114 * (n & 255)) / 255;
  return lum > 0.6 ? COLORS.text : '#ffffff';
}

/** The training loss per logged step (light) and its moving average (dark). */
export function lossChart(points: Point[], window: number): string {
  const W = 560,
    H = 260,
    l = 48,
    r = 14,
    t = 26,
    b = 34;
  const [s0, s1] = extent(points.map((p) => p.step));
  const [v0, v1] = extent(points.map((p) => p.loss));
  const xTicks = niceTicks(s0, s1, 6);
  const yTicks = niceTicks(Math.min(0, v0), v1, 5);
  const [x0, x1] = [xTicks[0], xTicks[xTicks.length - 1]];
  const [y0, y1] = [yTicks[0], yTicks[yTicks.length - 1]];
  const px = (s: number) => l + ((s - x0) / Math.max(1e-9, x1 - x0)) * (W - l - r);
  const py = (v: number) => t + (1 - (v - y0) / Math.max(1e-9, y1 - y0)) * (H - t - b);
  const path = (ps: Point[]) => ps.map((p, i) => `${i ? 'L' : 'M'}${f1(px(p.step))},${f1(py(p.loss))}`).join('');
  const grid =
    yTicks
      .map(
        (v) =>
          `<line x1="${l}" x2="${W - r}" y1="${f1(py(v))}" y2="${f1(py(v))}" stroke="${COLORS.grid}"/>${text(l - 6, py(v) + 4, String(v), `text-anchor="end" fill="${COLORS.muted}" font-size="11"`)}`,
      )
      .join('') +
    xTicks
      .map(
        (s) =>
          `<line x1="${f1(px(s))}" x2="${f1(px(s))}" y1="${H - b}" y2="${H - b + 4}" stroke="${COLORS.axis}"/>${text(px(s), H - b + 16, String(s), `text-anchor="middle" fill="${COLORS.muted}" font-size="11"`)}`,
      )
      .join('') +
    `<line x1="${l}" x2="${W - r}" y1="${H - b}" y2="${H - b}" stroke="${COLORS.axis}"/>` +
    text((l + W - r) / 2, H - 3, 'step', `text-anchor="middle" fill="${COLORS.muted}" font-size="11"`) +
    text(12, t + (H - t - b) / 2, 'loss', `text-anchor="middle" fill="${COLORS.muted}" font-size="11" transform="rotate(-90 12 ${f1(t + (H - t - b) / 2)})"`);
  const lines = `<path d="${path(thin(points, MAX_DRAWN))}" fill="none" stroke="#a9c3ee" stroke-width="1.2"/><path d="${path(thin(movingAverage(points, window), MAX_DRAWN))}" fill="none" stroke="#1d4f9e" stroke-width="2.5" stroke-linejoin="round"/>`;
  const legend =
    `<line x1="${W - 300}" x2="${W - 280}" y1="10" y2="10" stroke="#a9c3ee" stroke-width="2"/>${text(W - 275, 14, 'per step')}` +
    `<line x1="${W - 210}" x2="${W - 190}" y1="10" y2="10" stroke="#1d4f9e" stroke-width="3"/>${text(W - 185, 14, `moving average of ${window}`)}`;
  return svg(W, H, 'training loss by step', grid + lines + legend);
}

export interface GroupBars {
  label: string;
  note?: string;
  bars: { name: string; value: number | undefined; detail: string; color: string }[];
}

/** One group of thin bars per meta value, one bar per model: where tuning helped and where it did not. */
export function groupedBars(label: string, groups: GroupBars[], legend: { name: string; color: string }[]): string {
  const W = 560,
    left = 160,
    right = 96,
    barH = 12,
    gap = 3,
    groupGap = 14,
    top = 26;
  const groupH = (g: GroupBars) => g.bars.length * (barH + gap) - gap;
  const H = top + groups.reduce((a, g) => a + groupH(g) + groupGap, 0) + 20;
  const x = (v: number) => left + v * (W - left - right);
  let y = top;
  let body = [0, 0.5, 1]
    .map(
      (t) =>
        `<line x1="${f1(x(t))}" x2="${f1(x(t))}" y1="${top - 4}" y2="${H - 20}" stroke="${COLORS.grid}"/>${text(x(t), H - 6, `${t * 100}%`, `text-anchor="middle" fill="${COLORS.muted}" font-size="11"`)}`,
    )
    .join('');
  for (const g of groups) {
    const h = groupH(g);
    body += `<g><title>${esc(g.label)}</title>${text(left - 10, y + h / 2 + (g.note ? -2 : 4), clip(g.label, 22), 'text-anchor="end" font-weight="600"')}</g>`;
    if (g.note) body += text(left - 10, y + h / 2 + 12, g.note, `text-anchor="end" fill="${COLORS.muted}" font-size="11"`);
    for (const b of g.bars) {
      if (b.value !== undefined)
        body += `<rect x="${left}" y="${y}" width="${f1(Math.max(1, x(b.value) - left))}" height="${barH}" fill="${b.color}"><title>${esc(`${g.label}, ${b.name}: ${b.detail}`)}</title></rect>`;
      body += text(b.value !== undefined ? x(b.value) + 5 : left + 4, y + barH - 2, b.detail, `font-size="11" fill="${COLORS.muted}"`);
      y += barH + gap;
    }
    y += groupGap - gap;
  }
  const keys = legend
    .map((k, i) => `<rect x="${left + i * 110}" y="4" width="12" height="12" rx="2" fill="${k.color}"/>${text(left + i * 110 + 18, 14, k.name)}`)
    .join('');
  return svg(W, H, label, keys + body);
}

export interface Series {
  name: string;
  color: string;
  dashed?: boolean;
  /** One per x position; undefined where the series has no value. */
  points: ({ y: number; low?: number; high?: number } | undefined)[];
}

/**
 * Values per version: points with interval whiskers joined by lines. The y range is fitted to
 * the data (a history of 60–70% is unreadable on a 0–100% axis) and labelled, never hidden.
 */
export function versionChart(label: string, xs: { label: string; sub?: string; mark?: string }[], series: Series[], W = 1000): string {
  const H = 300,
    l = 48,
    r = 16,
    t = 34,
    b = 48;
  const values = series.flatMap((s) => s.points.flatMap((p) => (p ? [p.y, p.low ?? p.y, p.high ?? p.y] : [])));
  let lo = Math.max(0, Math.floor((Math.min(...values, 1) - 0.02) * 10) / 10);
  let hi = Math.min(1, Math.ceil((Math.max(...values, 0) + 0.02) * 10) / 10);
  if (hi - lo < 0.2) [lo, hi] = [Math.max(0, hi - 0.2), Math.max(hi, Math.min(1, lo + 0.2))];
  const yTicks = niceTicks(lo, hi, 5).filter((v) => v >= lo - 1e-9 && v <= hi + 1e-9);
  const slot = (W - l - r) / Math.max(1, xs.length);
  const px = (i: number) => l + slot * (i + 0.5);
  const py = (v: number) => t + (1 - (v - lo) / Math.max(1e-9, hi - lo)) * (H - t - b);
  let body = yTicks
    .map(
      (v) =>
        `<line x1="${l}" x2="${W - r}" y1="${f1(py(v))}" y2="${f1(py(v))}" stroke="${COLORS.grid}"/>${text(l - 6, py(v) + 4, `${Math.round(v * 100)}%`, `text-anchor="end" fill="${COLORS.muted}" font-size="11"`)}`,
    )
    .join('');
  xs.forEach((x, i) => {
    if (x.mark)
      body += `<rect x="${f1(px(i) - slot / 2 + 2)}" y="${t - 4}" width="${f1(slot - 4)}" height="${H - t - b + 4}" fill="#fff4de"/>${text(px(i), t - 8, x.mark, `text-anchor="middle" font-weight="600" fill="${COLORS.current}" font-size="11"`)}`;
    body += text(px(i), H - b + 16, x.label, 'text-anchor="middle" font-weight="600"');
    if (x.sub) body += text(px(i), H - b + 30, x.sub, `text-anchor="middle" fill="${COLORS.muted}" font-size="10"`);
  });
  body += `<line x1="${l}" x2="${W - r}" y1="${H - b}" y2="${H - b}" stroke="${COLORS.axis}"/>`;
  series.forEach((s, si) => {
    // Series share x positions; a small offset keeps overlapping whiskers apart.
    const dx = (si - (series.length - 1) / 2) * Math.min(8, slot / (series.length * 3));
    const pts = s.points.map((p, i) => (p ? { x: px(i) + dx, ...p } : undefined));
    let d = '';
    let pen = 'M';
    for (const p of pts) {
      if (!p) {
        pen = 'M';
        continue;
      }
      d += `${pen}${f1(p.x)},${f1(py(p.y))}`;
      pen = 'L';
    }
    body += `<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="5 4"' : ''}/>`;
    for (const p of pts) {
      if (!p) continue;
      if (p.low !== undefined && p.high !== undefined)
        body += `<line x1="${f1(p.x)}" x2="${f1(p.x)}" y1="${f1(py(p.low))}" y2="${f1(py(p.high))}" stroke="${s.color}" stroke-width="1.5"/>`;
      body += `<circle cx="${f1(p.x)}" cy="${f1(py(p.y))}" r="4" fill="${s.dashed ? '#fff' : s.color}" stroke="${s.color}" stroke-width="1.5"><title>${esc(`${s.name}: ${pct(p.y)}${p.low !== undefined ? ` (95% CI ${pct(p.low)}–${pct(p.high!)})` : ''}`)}</title></circle>`;
    }
  });
  const keys = series
    .map(
      (s, i) =>
        `<line x1="${l + i * 150}" x2="${l + i * 150 + 20}" y1="10" y2="10" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="5 4"' : ''}/>${text(l + i * 150 + 26, 14, s.name)}`,
    )
    .join('');
  return svg(W, H, label, keys + body);
}

/** Ticks for a time axis at whole seconds, minutes or hours, never "1 min 40 s". */
export function timeTicks(maxSeconds: number, count = 5): { ticks: number[]; format: (s: number) => string } {
  const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
  const step = steps.find((s) => s * count >= maxSeconds) ?? 86400 * Math.ceil(maxSeconds / (86400 * count));
  const ticks: number[] = [];
  for (let v = 0; v < maxSeconds + step; v += step) ticks.push(v);
  const format = (s: number) => (s === 0 ? '0' : step >= 3600 ? `${s / 3600} h` : step >= 60 ? `${s / 60} min` : `${s} s`);
  return { ticks, format };
}
