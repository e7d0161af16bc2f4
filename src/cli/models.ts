import { Command } from 'commander';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pct } from '../metrics';
import { defaultStore, STATE_DIR } from '../paths';
import { Registry } from '../registry/registry';
import { renderHistory } from '../report/render';
import { cpuNotice } from '../report/summary';
import { normaliseStoreUrl } from '../store/location';
import { openStore } from '../store/open';
import { printJson, table } from './output';

/** The registry of a config name in the store given by --artifacts (default .slearn/artifacts). */
async function registry(name: string, artifacts?: string): Promise<Registry> {
  const url = normaliseStoreUrl(artifacts ?? defaultStore());
  if (typeof url !== 'string') throw new Error(`--artifacts: ${url.error}`);
  return new Registry(await openStore(url), name);
}

function parseRef(ref: string): { name: string; version?: number } {
  const [name, v] = ref.split('@');
  if (v !== undefined && !/^\d+$/.test(v)) throw new Error(`"${ref}": write NAME@VERSION with a version number, e.g. agri-demo@3`);
  return { name, ...(v !== undefined ? { version: Number(v) } : {}) };
}

export function modelsCommand(): Command {
  const m = new Command('models').description('the model registry: versions of tuned models per config, and which one is `current`');
  const store = (c: Command) =>
    c
      .option('--artifacts <store>', 'artifact store (directory or s3://bucket/prefix; default SLEARN_ARTIFACTS, else $SLEARN_HOME/artifacts)')
      .option('--json', 'machine-readable');

  store(m.command('list').argument('<name>', 'config name')).action(async (name: string, o) => {
    const reg = await registry(name, o.artifacts);
    const [versions, current] = [await reg.versions(), await reg.current()];
    if (o.json) return printJson({ name, current: current?.version ?? null, versions });
    if (!versions.length) return console.log(`${name}: no versions yet (current: the base model)`);
    const t = table(['version', '', 'run', 'created', 'tuned', 'vs reference', 'retention', 'decision']);
    for (const v of versions) {
      const e = v.evaluation;
      t.push([
        String(v.version),
        v.version === current?.version ? 'current' : '',
        v.runId,
        v.createdAt.slice(0, 19).replace('T', ' '),
        pct(e.tuned.accuracy),
        `${e.gain >= 0 ? '+' : ''}${(e.gain * 100).toFixed(1)} pts`,
        e.retention ? pct(e.retention.accuracy) : '',
        `${v.decision.promoted ? 'promoted' : 'refused'}`,
      ]);
    }
    console.log(t.toString());
    console.log(`current: ${current ? `version ${current.version}` : 'the base model'}`);
  });

  store(m.command('show').argument('<name[@version]>')).action(async (ref: string, o) => {
    const { name, version } = parseRef(ref);
    const reg = await registry(name, o.artifacts);
    const v = version ? await reg.version(version) : await reg.current();
    if (!v) throw new Error(version ? `${name} has no version ${version}` : `${name} has no current model (the base is in service)`);
    if (o.json) return printJson(v);
    const e = v.evaluation;
    console.log(
      [
        `${name}@${v.version}${(await reg.current())?.version === v.version ? ' (current)' : ''}`,
        `  run           ${v.runId} (${v.createdAt})`,
        `  base          ${v.base}${v.parent ? `, continued from version ${v.parent}` : ''}`,
        `  adapter       ${v.adapter.uri} (${v.adapter.sha256.slice(0, 12)})`,
        `  data          ${v.dataSha.slice(0, 12)}, ${v.trainItems} items trained, ${v.steps} steps, ${v.trainSeconds.toFixed(1)} s`,
        `  trained on    ${JSON.stringify(v.runtime)}`,
        ...(cpuNotice(v.runtime) ? [`  notice        ${cpuNotice(v.runtime)}`] : []),
        `  accuracy      base ${pct(e.base.accuracy)}${e.current ? `, current ${pct(e.current.accuracy)}` : ''}, tuned ${pct(e.tuned.accuracy)} [${pct(e.tuned.low)}, ${pct(e.tuned.high)}] on ${e.items} items`,
        `  retention     ${e.retention ? `${pct(e.retention.accuracy)} of ${e.retention.total} known items` : 'not measured'}`,
        `  decision      ${v.decision.reason}`,
      ].join('\n'),
    );
  });

  store(m.command('promote').argument('<name@version>')).action(async (ref: string, o) => {
    const { name, version } = parseRef(ref);
    if (!version) throw new Error('give the version to promote: NAME@VERSION');
    const reg = await registry(name, o.artifacts);
    if (!(await reg.version(version))) throw new Error(`${name} has no version ${version}: see \`slearn models list ${name}\``);
    const ev = await reg.setCurrent(version, 'promote', 'promoted by hand');
    if (o.json) return printJson(ev);
    console.log(`${name}: current is now version ${version} (was ${ev.previous ?? 'the base model'})`);
  });

  store(m.command('rollback').argument('<name>')).action(async (name: string, o) => {
    const ev = await (await registry(name, o.artifacts)).rollback();
    if (o.json) return printJson(ev);
    console.log(`${name}: current is now ${ev.version ? `version ${ev.version}` : 'the base model'} (was ${ev.previous ?? 'the base model'})`);
  });

  store(
    m.command('history').argument('<name>').description('accuracy and retention per version over time, and every run and decision (writes an HTML page)'),
  ).action(async (name: string, o) => {
    const reg = await registry(name, o.artifacts);
    const [versions, aliases, runs] = [await reg.versions(), await reg.aliasLog(), await reg.runs()];
    if (o.json) return printJson({ name, versions, aliases, runs });
    const page = renderHistory(name, versions, aliases, runs);
    const dir = join(STATE_DIR, 'models', name);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'history.md'), page.markdown);
    await writeFile(join(dir, 'history.html'), page.html);
    console.log(page.markdown);
    console.log(`\nhistory page: ${join(dir, 'history.html')}`);
  });
  return m;
}
