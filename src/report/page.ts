import { esc } from './escape';

/**
 * The page shell every report shares. Self-contained by construction: inline CSS and script,
 * and a Content-Security-Policy that forbids loading anything else, so a report opened offline
 * or attached to a ticket looks the same and can never call home.
 */
export function page(title: string, body: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<title>${esc(title)}</title>
<style>${CSS}</style>
</head>
<body>
<main>
${body}
</main>
<script>${SCRIPT}</script>
</body>
</html>
`;
}

const CSS = `
:root{color-scheme:light;--fg:#1d2330;--muted:#5b6472;--line:#dde1e7;--soft:#f5f7fa;--good:#1e7d3a;--bad:#b8322a}
*{box-sizing:border-box}
body{margin:0;background:#fff;color:var(--fg);font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:20px 20px 64px}
h1{font-size:1.55rem;margin:.3em 0 .1em;line-height:1.25;overflow-wrap:anywhere}
h2{font-size:1.15rem;margin:2.2em 0 .7em;padding-bottom:.3em;border-bottom:1px solid var(--line)}
h3{font-size:1rem;margin:1.4em 0 .4em}
p{margin:.5em 0}
code{font:.88em ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:var(--soft);padding:1px 4px;border-radius:4px;overflow-wrap:anywhere}
.sub{color:var(--muted);margin:0 0 1em}
.note{color:var(--muted);font-size:.85rem;margin:.6em 0 0}
.badge{display:inline-block;vertical-align:middle;margin-left:.4em;padding:2px 10px;border-radius:999px;font-size:.8rem;font-weight:600;letter-spacing:.02em}
.good{background:#e2f3e7;color:#17602d}.bad{background:#fbe6e3;color:#962a21}.neutral{background:#edf0f4;color:#3d4654}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,165px),1fr));gap:12px;margin:1em 0}
.card{border:1px solid var(--line);border-radius:8px;padding:10px 14px;background:var(--soft)}
.card .k{font-size:.75rem;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:1.25rem;font-weight:650;line-height:1.3;white-space:nowrap}
.card .n{font-size:.82rem;color:var(--muted)}
.verdict{border-left:4px solid var(--muted);background:var(--soft);padding:10px 16px;margin:1em 0;border-radius:0 6px 6px 0;overflow-wrap:anywhere}
.verdict.good{border-color:var(--good);background:#f1f9f3;color:var(--fg)}.verdict.bad{border-color:var(--bad);background:#fdf3f2;color:var(--fg)}
.notices{background:#fffaeb;border:1px solid #f1deaa;border-radius:6px;padding:8px 14px 8px 32px}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,460px),1fr));gap:18px}
figure{margin:0;border:1px solid var(--line);border-radius:8px;padding:12px 14px;min-width:0}
figcaption{font-weight:600;margin-bottom:8px}
figure .caption-note{font-weight:400;color:var(--muted);font-size:.85rem}
svg{display:block;max-width:100%;height:auto;font-family:inherit}
.scroll{overflow-x:auto;border:1px solid var(--line);border-radius:8px}
table{border-collapse:collapse;width:100%;font-size:.88rem}
th,td{padding:6px 9px;text-align:left;vertical-align:top;border-bottom:1px solid var(--line)}
thead th{background:var(--soft);font-weight:600;white-space:nowrap}
.filterable .scroll{max-height:80vh;overflow:auto}
.filterable thead th{position:sticky;top:0;z-index:1;box-shadow:0 1px 0 var(--line)}
@media print{.filterable .scroll{max-height:none;overflow:visible}}
tbody tr:last-child td{border-bottom:0}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.text{min-width:160px;max-width:340px;overflow-wrap:anywhere}
td.q{min-width:300px;max-width:420px;overflow-wrap:anywhere}
td.id{min-width:200px}
td.nowrap{white-space:nowrap}
td.why{min-width:200px;max-width:320px;color:var(--muted);overflow-wrap:anywhere}
.na{color:var(--muted)}
.mark{font-weight:700;margin-right:4px}.mark.ok{color:var(--good)}.mark.no{color:var(--bad)}.mark.na{color:var(--muted)}
.tags{margin-top:4px}.tags span{display:inline-block;font-size:.72rem;color:var(--muted);background:var(--soft);border:1px solid var(--line);border-radius:4px;padding:0 5px;margin:2px 4px 0 0}
.pill{display:inline-block;white-space:nowrap;font-size:.78rem;font-weight:600;padding:1px 9px;border-radius:999px;background:#edf0f4;color:#3d4654}
.pill.fixed,.pill.kept,.pill.promoted{background:#e2f3e7;color:#17602d}
.pill.broken,.pill.refused{background:#fbe6e3;color:#962a21}
.pill.both-right,.pill.replayed{background:#e4edfb;color:#1d4f9e}
.pill.both-wrong,.pill.dropped{background:#edf0f4;color:#3d4654}
.pill.ungradeable,.pill.no-training{background:#fff1d6;color:#7a4b00}
ol.answers{margin:0;padding-left:1.2em}
.controls{display:none;flex-wrap:wrap;gap:8px 14px;align-items:center;margin:.6em 0}
.js .controls{display:flex}
.facet{display:flex;flex-wrap:wrap;gap:4px;align-items:center}
.facet .label{font-size:.8rem;color:var(--muted);margin-right:2px}
.controls button{font:inherit;font-size:.82rem;border:1px solid var(--line);background:#fff;color:var(--fg);border-radius:999px;padding:2px 11px;cursor:pointer}
.controls button[aria-pressed="true"]{background:var(--fg);border-color:var(--fg);color:#fff}
.controls input[type=search]{font:inherit;font-size:.9rem;padding:4px 10px;border:1px solid #c3c9d2;border-radius:6px;width:min(100%,280px)}
.count,.count-nojs{font-size:.82rem;color:var(--muted)}
.js .count-nojs{display:none}
.empty{color:var(--muted);font-style:italic}
footer{margin-top:3em;color:var(--muted);font-size:.8rem}
@media (max-width:640px){main{padding:14px 12px 48px}h1{font-size:1.3rem}.card .v{font-size:1.15rem}}
@media print{.controls{display:none!important}}
`;

/**
 * Filters and search for every `.filterable` block: rows carry `data-<facet>` values, buttons
 * pick one value per facet, the search box matches any text in the row. Without script, every
 * row stays visible and the controls stay hidden.
 */
const SCRIPT = `
(function () {
  document.documentElement.classList.add('js');
  document.querySelectorAll('.filterable').forEach(function (box) {
    var rows = Array.prototype.slice.call(box.querySelectorAll('tbody tr'));
    // Cells joined with a space, so a search never matches across the end of one cell and the start of the next.
    var texts = rows.map(function (r) { return Array.prototype.map.call(r.cells, function (c) { return c.textContent; }).join(' ').toLowerCase(); });
    var chosen = {};
    var query = '';
    var count = box.querySelector('.count');
    function apply() {
      var shown = 0;
      rows.forEach(function (r, i) {
        var show = !query || texts[i].indexOf(query) >= 0;
        for (var f in chosen) if (chosen[f] && r.getAttribute('data-' + f) !== chosen[f]) show = false;
        r.hidden = !show;
        if (show) shown++;
      });
      if (count) count.textContent = shown + ' of ' + rows.length + ' shown';
    }
    box.querySelectorAll('button[data-facet]').forEach(function (b) {
      b.addEventListener('click', function () {
        var facet = b.getAttribute('data-facet');
        chosen[facet] = b.getAttribute('data-value');
        box.querySelectorAll('button[data-facet="' + facet + '"]').forEach(function (x) { x.setAttribute('aria-pressed', String(x === b)); });
        apply();
      });
    });
    var input = box.querySelector('input[type=search]');
    if (input) input.addEventListener('input', function () { query = input.value.trim().toLowerCase(); apply(); });
    apply();
  });
})();
`;

export interface Card {
  k: string;
  v: string;
  n?: string;
}

export const cards = (list: Card[]) =>
  `<div class="cards">${list.map((c) => `<div class="card"><div class="k">${esc(c.k)}</div><div class="v">${esc(c.v)}</div>${c.n ? `<div class="n">${esc(c.n)}</div>` : ''}</div>`).join('')}</div>`;

export const figure = (caption: string, svg: string, note?: string) =>
  `<figure><figcaption>${esc(caption)}${note ? ` <span class="caption-note">${esc(note)}</span>` : ''}</figcaption>${svg}</figure>`;

/** A column head; `num` right-aligns the column. */
export interface Column {
  head: string;
  num?: boolean;
  /** A class for the body cells (text, why). */
  cls?: string;
}

/** Cells are HTML: callers escape what they put in. */
export function table(cols: Column[], rows: string[][], id?: string): string {
  const head = cols.map((c) => `<th${c.num ? ' class="num"' : ''}>${esc(c.head)}</th>`).join('');
  const body = rows.map((r) => `<tr>${r.map((cell, i) => td(cols[i], cell)).join('')}</tr>`).join('\n');
  return `<div class="scroll"><table${id ? ` id="${esc(id)}"` : ''}><thead><tr>${head}</tr></thead><tbody>\n${body}\n</tbody></table></div>`;
}

const td = (c: Column | undefined, cell: string) => {
  const cls = c?.num ? 'num' : c?.cls;
  return `<td${cls ? ` class="${cls}"` : ''}>${cell}</td>`;
};

export interface Facet {
  /** The row attribute it filters on: `data-<name>`. A plain word. */
  name: string;
  label: string;
  options: { value: string; label: string; count: number }[];
}

export interface FilterRow {
  facets: Record<string, string>;
  cells: string[];
}

/** A table with facet buttons, a search box and a live count of the rows shown. */
export function filterableTable(o: { id: string; facets: Facet[]; placeholder: string; cols: Column[]; rows: FilterRow[] }): string {
  const facets = o.facets
    .map((f) => {
      const all = `<button type="button" data-facet="${esc(f.name)}" data-value="" aria-pressed="true">all</button>`;
      const opts = f.options
        .map((x) => `<button type="button" data-facet="${esc(f.name)}" data-value="${esc(x.value)}" aria-pressed="false">${esc(x.label)} (${x.count})</button>`)
        .join('');
      return `<div class="facet" role="group" aria-label="${esc(f.label)}"><span class="label">${esc(f.label)}</span>${all}${opts}</div>`;
    })
    .join('');
  const search = `<input type="search" placeholder="${esc(o.placeholder)}" aria-label="${esc(o.placeholder)}">`;
  const head = o.cols.map((c) => `<th${c.num ? ' class="num"' : ''}>${esc(c.head)}</th>`).join('');
  const body = o.rows
    .map((r) => {
      const attrs = Object.entries(r.facets)
        .map(([k, v]) => ` data-${esc(k)}="${esc(v)}"`)
        .join('');
      return `<tr${attrs}>${r.cells.map((cell, i) => td(o.cols[i], cell)).join('')}</tr>`;
    })
    .join('\n');
  return `<div class="filterable" id="${esc(o.id)}"><div class="controls">${search}${facets}<span class="count" aria-live="polite"></span></div><div class="scroll"><table><thead><tr>${head}</tr></thead><tbody>\n${body}\n</tbody></table></div><p class="count-nojs">${o.rows.length} rows</p></div>`;
}
