import { pct } from '../metrics';
import type { AliasEvent, ModelVersion, RunRecord } from '../schemas/registry';
import { COLORS, versionChart, type Series } from './charts';
import { esc, mdCell } from './escape';
import { count, duration, interval, points, pValue, when } from './format';
import { cards, figure, filterableTable, page, table, type Card, type Column } from './page';
import { tally } from './series';

type Outcome = RunRecord['outcome'];
const OUTCOMES: readonly Outcome[] = ['promoted', 'refused', 'no-training', 'nothing-new', 'recorded'];

const versionName = (v: number | null | undefined) => (v ? `version ${v}` : 'the base model');
const day = (iso: string) => when(iso).slice(0, 10);

function currentLine(aliases: AliasEvent[]): string {
  const last = aliases.at(-1);
  if (!last) return 'Current model: the base model (no version has been promoted).';
  const how = last.by === 'gate' ? 'promoted by the gate' : last.by === 'promote' ? 'promoted by hand' : 'rolled back by hand';
  return `Current model: ${versionName(last.version)}, ${how} on ${when(last.at)}${last.runId ? ` (run ${last.runId})` : ''}.`;
}

/**
 * The history of one config: every version's accuracy and retention over time, which one is in
 * service, and what each run decided and why.
 */
export function renderHistory(name: string, versions: ModelVersion[], aliases: AliasEvent[], runs: RunRecord[]): { markdown: string; html: string } {
  const vs = [...versions].sort((a, b) => a.version - b.version);
  const log = [...aliases].sort((a, b) => a.seq - b.seq);
  const rs = [...runs].sort((a, b) => a.at.localeCompare(b.at));
  const current = log.at(-1)?.version ?? null;
  return { markdown: markdown(name, vs, log, rs), html: html(name, vs, log, rs, current) };
}

// Forgetting is 1 − retention: one column says both.
function versionCells(v: ModelVersion): string[] {
  const e = v.evaluation;
  return [
    `v${v.version}`,
    v.runId,
    when(v.createdAt),
    v.parent ? `v${v.parent}` : 'base',
    count(v.trainItems),
    `${count(v.steps)} steps, ${duration(v.trainSeconds)}`,
    `${pct(e.tuned.accuracy)} (${interval(e.tuned)})`,
    points(e.gain),
    e.pValue !== undefined ? pValue(e.pValue) : '–',
    e.retention ? `${pct(e.retention.accuracy)} of ${e.retention.total}` : '–',
    v.decision.promoted ? 'promoted' : 'refused',
  ];
}
const VERSION_HEADS = ['version', 'run', 'created', 'parent', 'trained items', 'training', 'tuned accuracy (95% CI)', 'gain', 'McNemar', 'retention', 'gate'];
/** The page folds the markdown's eleven columns into eight, so the table fits a laptop screen. */
const VERSION_COLS: Column[] = [
  { head: 'version', cls: 'id' },
  { head: 'created', cls: 'nowrap' },
  { head: 'trained items', num: true },
  { head: 'training', cls: 'nowrap' },
  { head: 'tuned accuracy (95% CI)', cls: 'nowrap' },
  { head: 'gain (McNemar)', cls: 'nowrap' },
  { head: 'retention', num: true },
  { head: 'gate' },
];

function versionRow(v: ModelVersion, current: number | null): string[] {
  const e = v.evaluation;
  const pill = (cls: string, s: string, title?: string) => `<span class="pill ${cls}"${title ? ` title="${esc(title)}"` : ''}>${esc(s)}</span>`;
  return [
    `<b>v${v.version}</b> <span class="na">from ${v.parent ? `v${v.parent}` : 'base'}</span>${v.version === current ? ` ${pill('promoted', 'current')}` : ''}<div class="tags"><span>${esc(v.runId)}</span></div>`,
    esc(when(v.createdAt)).replace(' ', '<br>'),
    esc(count(v.trainItems)),
    `${esc(count(v.steps))} steps<br>${esc(duration(v.trainSeconds))}`,
    `${esc(pct(e.tuned.accuracy))}<br><span class="na">${esc(interval(e.tuned))}</span>`,
    `${esc(points(e.gain))}${e.pValue !== undefined ? `<br><span class="na">${esc(pValue(e.pValue))}</span>` : ''}`,
    e.retention ? `${esc(pct(e.retention.accuracy))}<br><span class="na">of ${e.retention.total}</span>` : '–',
    pill(v.decision.promoted ? 'promoted' : 'refused', v.decision.promoted ? 'promoted' : 'refused', v.decision.reason),
  ];
}

const runCells = (r: RunRecord) => [
  r.runId,
  when(r.at),
  r.outcome,
  r.version ? `v${r.version}` : '–',
  r.currentVersion ? `v${r.currentVersion}` : 'base',
  r.tunedAccuracy !== undefined ? pct(r.tunedAccuracy) : '–',
  r.retention !== undefined ? pct(r.retention) : '–',
  r.reason,
];
const RUN_HEADS = ['run', 'when', 'outcome', 'version', 'started from', 'tuned', 'retention', 'reason'];

const aliasCells = (a: AliasEvent) => [
  String(a.seq),
  when(a.at),
  a.by,
  a.previous ? `v${a.previous}` : 'base',
  a.version ? `v${a.version}` : 'base',
  a.runId ?? '–',
  a.reason,
];
const ALIAS_HEADS = ['#', 'when', 'by', 'from', 'to', 'run', 'reason'];

function mdTable(heads: string[], rows: string[][], max = 120): string[] {
  return [`| ${heads.join(' | ')} |`, `|${heads.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.map((c) => mdCell(c, max)).join(' | ')} |`)];
}

function markdown(name: string, vs: ModelVersion[], log: AliasEvent[], rs: RunRecord[]): string {
  const out = [
    `# slearn history: ${name}`,
    '',
    currentLine(log),
    '',
    `${vs.length} version${vs.length === 1 ? '' : 's'}, ${rs.length} run${rs.length === 1 ? '' : 's'}.`,
  ];
  if (vs.length) out.push('', '## Versions', '', ...mdTable(VERSION_HEADS, vs.map(versionCells)));
  if (rs.length) out.push('', '## Runs', '', ...mdTable(RUN_HEADS, rs.map(runCells), 200));
  if (log.length) out.push('', '## Moves of `current`', '', ...mdTable(ALIAS_HEADS, log.map(aliasCells), 200));
  return `${out.join('\n')}\n`;
}

function html(name: string, vs: ModelVersion[], log: AliasEvent[], rs: RunRecord[], current: number | null): string {
  const cur = vs.find((v) => v.version === current);
  const last = rs.at(-1);
  const info: Card[] = [
    {
      k: 'In service',
      v: cur ? `v${cur.version}` : 'base',
      n: cur ? `tuned ${pct(cur.evaluation.tuned.accuracy)} · since ${day(log.at(-1)!.at)}` : 'no version promoted',
    },
    { k: 'Versions', v: count(vs.length), n: `${vs.filter((v) => v.decision.promoted).length} passed the gate` },
    { k: 'Runs', v: count(rs.length), n: rs.length ? [...tally(rs.map((r) => r.outcome))].map(([k, n]) => `${n} ${k}`).join(' · ') : 'none yet' },
  ];
  if (last) info.push({ k: 'Last run', v: last.outcome, n: when(last.at) });

  const series: Series[] = [
    {
      name: 'tuned accuracy',
      color: COLORS.tuned,
      points: vs.map((v) => ({ y: v.evaluation.tuned.accuracy, low: v.evaluation.tuned.low, high: v.evaluation.tuned.high })),
    },
    {
      name: 'retention',
      color: COLORS.retention,
      points: vs.map((v) =>
        v.evaluation.retention ? { y: v.evaluation.retention.accuracy, low: v.evaluation.retention.low, high: v.evaluation.retention.high } : undefined,
      ),
    },
    { name: 'base accuracy', color: COLORS.base, dashed: true, points: vs.map((v) => ({ y: v.evaluation.base.accuracy })) },
  ];
  const chart = vs.length
    ? figure(
        'Accuracy and retention by version',
        versionChart(
          'accuracy and retention per version',
          vs.map((v) => ({ label: `v${v.version}`, sub: day(v.createdAt), ...(v.version === current ? { mark: 'current' } : {}) })),
          series,
        ),
        "each version on its own run's held-out set; whiskers: 95% Wilson interval",
      )
    : '<p class="empty">No versions yet: no run has trained a model for this config.</p>';

  const counts = tally(rs.map((r) => r.outcome));
  const runsTable = rs.length
    ? filterableTable({
        id: 'runs',
        placeholder: 'search runs and reasons',
        facets: [
          { name: 'outcome', label: 'outcome', options: OUTCOMES.filter((o) => counts.get(o)).map((o) => ({ value: o, label: o, count: counts.get(o)! })) },
        ],
        cols: [
          { head: 'run', cls: 'id' },
          { head: 'when', cls: 'nowrap' },
          { head: 'outcome' },
          { head: 'version' },
          { head: 'started from' },
          { head: 'tuned', num: true },
          { head: 'retention', num: true },
          { head: 'reason', cls: 'why' },
        ],
        rows: [...rs].reverse().map((r) => {
          const c = runCells(r).map(esc);
          c[0] = `<code>${c[0]}</code>`;
          c[2] = `<span class="pill ${esc(r.outcome)}">${c[2]}</span>`;
          return { facets: { outcome: r.outcome }, cells: c };
        }),
      })
    : '<p class="empty">No runs recorded.</p>';

  const body = [
    `<h1>slearn history: ${esc(name)}</h1>`,
    `<p class="sub">${esc(currentLine(log))}</p>`,
    cards(info),
    `<h2>Versions over time</h2><div class="charts">${chart}</div>`,
    `<h2>Runs</h2><p>Newest first. Every run of this config, what it decided and why.</p>${runsTable}`,
    vs.length
      ? `<h2>Versions</h2>${table(
          VERSION_COLS,
          vs.map((v) => versionRow(v, current)),
        )}`
      : '',
    log.length
      ? `<h2>Moves of <code>current</code></h2>${table(
          ALIAS_HEADS.map((head): Column => (head === 'reason' ? { head, cls: 'why' } : head === 'when' ? { head, cls: 'nowrap' } : { head })),
          log.map((a) => aliasCells(a).map(esc)),
        )}`
      : '',
    `<footer>slearn model history of ${esc(name)}. A self-contained page: it loads nothing from the network.</footer>`,
  ];
  return page(`slearn history: ${name}`, body.filter(Boolean).join('\n'));
}
