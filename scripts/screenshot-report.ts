/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
/**
 * Renders slearn report pages in headless Chromium, saves full-page screenshots and checks that
 * the page works offline: no console or page errors, no request leaving file: / data:, search
 * and filters change the rows shown, and nothing overflows a phone-sized window.
 *
 *   npx tsx scripts/screenshot-report.ts [FILE ...]
 *
 * FILE is a report page (.html; the PNG goes next to it with the same name), or a fixture (.json:
 * a ReportData, a ComparisonData, or {name, versions, aliases, runs} for a history page), which
 * is rendered to .slearn/report-preview/ first. Without FILE: the newest .slearn/runs/*\/report.html.
 *
 * Needs Debian's Chromium and playwright-core, neither of which `make test` installs:
 *   apt-get install -y chromium
 *   npm install --no-save playwright-core@1.64.1
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, extname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { renderComparison, renderHistory, renderHtml } from '../src/report/render';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
// Without the background-networking flags Chromium calls home at start, which a closed network refuses.
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const PREVIEW = resolve('.slearn/report-preview');
const MAX_SHOT = 30_000;

function newestRunReport(): string {
  const root = resolve('.slearn/runs');
  const found = existsSync(root)
    ? readdirSync(root)
        .map((d) => join(root, d, 'report.html'))
        .filter((f) => existsSync(f))
        .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)
    : [];
  if (!found.length) throw new Error(`no report.html under ${root}: pass a report page or a fixture (.json)`);
  return found[0];
}

/** A fixture becomes a page in .slearn/report-preview; a page is used where it is. */
function pageFor(file: string): string {
  if (extname(file) !== '.json') return resolve(file);
  const data = JSON.parse(readFileSync(file, 'utf8'));
  const html =
    data.versions && data.aliases && data.runs
      ? renderHistory(data.name, data.versions, data.aliases, data.runs).html
      : data.rows && data.title
        ? renderComparison(data).html
        : renderHtml(data);
  mkdirSync(PREVIEW, { recursive: true });
  const out = join(PREVIEW, `${basename(file, '.json')}.html`);
  writeFileSync(out, html);
  return out;
}

async function loadPlaywright() {
  try {
    return await import('playwright-core');
  } catch {
    throw new Error('playwright-core is not installed: npm install --no-save playwright-core@1.64.1');
  }
}

async function check(file: string): Promise<string[]> {
  const { chromium } = await loadPlaywright();
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: apt-get install -y chromium (or set CHROMIUM)`);
  const profile = mkdtempSync(join(tmpdir(), 'slearn-chromium-'));
  const problems: string[] = [];
  const notes: string[] = [];
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    viewport: { width: 1280, height: 900 },
  });
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    page.on('console', (m) => m.type() === 'error' && problems.push(`console error: ${m.text()}`));
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('request', (r) => !/^(file|data|about):/.test(r.url()) && problems.push(`request to ${r.url()}`));
    await page.goto(pathToFileURL(file).href, { waitUntil: 'load' });
    const png = join(dirname(file), `${basename(file, '.html')}.png`);
    // Chromium cannot capture a page much taller than this in one image (a 2,000-item report is).
    const height = await page.evaluate(() => document.documentElement.scrollHeight);
    if (height <= MAX_SHOT) await page.screenshot({ path: png, fullPage: true });
    else await page.screenshot({ path: png, fullPage: true, clip: { x: 0, y: 0, width: 1280, height: MAX_SHOT } });
    notes.push(`screenshot: ${png}${height > MAX_SHOT ? ` (the top ${MAX_SHOT} of ${height} px)` : ''}`);

    const boxes = page.locator('.filterable');
    for (let b = 0; b < (await boxes.count()); b++) {
      const box = boxes.nth(b);
      const id = (await box.getAttribute('id')) ?? `#${b}`;
      const visible = () => box.locator('tbody tr:not([hidden])').count();
      const total = await box.locator('tbody tr').count();
      if ((await visible()) !== total) problems.push(`${id}: ${total - (await visible())} rows hidden before any filter`);

      // A word some rows hold and others do not, so a working search must change what is shown.
      const word = await box.evaluate((el) => {
        const texts = [...el.querySelectorAll('tbody tr')].map((r) => (r as HTMLElement).innerText.toLowerCase());
        const seen = new Map<string, number>();
        for (const t of texts) for (const w of new Set(t.match(/[a-z]{5,}/g) ?? [])) seen.set(w, (seen.get(w) ?? 0) + 1);
        // About a quarter of the rows: a clear change either way.
        const target = texts.length / 4;
        return [...seen].filter(([, n]) => n < texts.length).sort((a, b) => Math.abs(a[1] - target) - Math.abs(b[1] - target))[0]?.[0];
      });
      if (word) {
        await box.locator('input[type=search]').pressSequentially(word);
        const n = await visible();
        if (n === total || n === 0) problems.push(`${id}: searching "${word}" left ${n} of ${total} rows`);
        const label = (await box.locator('.count').textContent()) ?? '';
        if (!label.startsWith(`${n} of ${total}`)) problems.push(`${id}: the count says "${label}" with ${n} rows shown`);
        notes.push(`${id}: search "${word}": ${n} of ${total} rows`);
        await box.locator('input[type=search]').fill('');
        if ((await visible()) !== total) problems.push(`${id}: clearing the search did not bring every row back`);
      }
      const buttons = box.locator('button[data-facet]:not([data-value=""])');
      let clicked = false;
      for (let i = 0; i < (await buttons.count()) && !clicked; i++) {
        const button = buttons.nth(i);
        const m = /\((\d+)\)$/.exec((await button.textContent()) ?? '');
        if (!m || Number(m[1]) === total) continue;
        await button.click();
        const n = await visible();
        if (n !== Number(m[1])) problems.push(`${id}: filter "${await button.textContent()}" shows ${n} rows`);
        notes.push(`${id}: filter "${await button.textContent()}": ${n} of ${total} rows`);
        await box.locator(`button[data-facet="${await button.getAttribute('data-facet')}"][data-value=""]`).click();
        clicked = true;
      }
      if (!clicked && (await buttons.count())) notes.push(`${id}: every filter holds every row; no click checked`);
    }

    await page.setViewportSize({ width: 400, height: 800 });
    await page.evaluate(() => window.scrollTo(0, 0));
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    if (overflow > 1) problems.push(`the page is ${overflow}px wider than a 400px window`);
    const narrow = join(dirname(file), `${basename(file, '.html')}-narrow.png`);
    await page.screenshot({ path: narrow, fullPage: false });
    notes.push(`narrow screenshot: ${narrow}`);
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
  for (const n of notes) console.log(`  ${n}`);
  return problems;
}

async function main() {
  const args = process.argv.slice(2);
  const files = (args.length ? args : [newestRunReport()]).map(pageFor);
  let failed = false;
  for (const f of files) {
    console.log(f);
    const problems = await check(f);
    for (const p of problems) console.error(`  FAIL ${p}`);
    failed ||= problems.length > 0;
  }
  if (failed) process.exit(1);
  console.log('ok');
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
