/**
 * What the Temporal server really stores: raw histories fetched with the Temporal CLI (no SDK data
 * converter in between), and a search for a marker string that also looks inside every base64
 * value (raw payload `data`), so that a plaintext payload cannot hide from the check.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { temporalBinary } from '../../src/temporal/devServer';

function cli(address: string, args: string[]): string {
  const r = spawnSync(temporalBinary(), [...args, '--address', address, '--namespace', 'default', '--output', 'json', '--color', 'never'], {
    encoding: 'utf8',
    timeout: 60_000,
    maxBuffer: 256 * 1024 * 1024,
  });
  if (r.status !== 0) throw new Error(`temporal ${args.join(' ')} failed (${r.status ?? r.signal}): ${r.stderr}`);
  return r.stdout;
}

/** The raw JSON history of every run (continue-as-new chain included) of a workflow id, oldest first. */
export function rawHistories(address: string, workflowId: string): { runId: string; json: string }[] {
  const listed = JSON.parse(cli(address, ['workflow', 'list', '--query', `WorkflowId = '${workflowId}'`]) || '[]') as {
    execution: { runId: string };
    startTime: string;
  }[];
  const runs = (Array.isArray(listed) ? listed : [listed]).sort((a, b) => a.startTime.localeCompare(b.startTime));
  if (!runs.length) throw new Error(`no runs of ${workflowId} listed`);
  return runs.map((r) => ({ runId: r.execution.runId, json: cli(address, ['workflow', 'show', '--workflow-id', workflowId, '--run-id', r.execution.runId]) }));
}

const BASE64 = /^[A-Za-z0-9+/]{8,}={0,2}$/;

/** Every string in a JSON text, plus the UTF-8 decoding of each one that is base64. */
export function jsonStrings(json: string): string[] {
  const out: string[] = [];
  const walk = (v: unknown): void => {
    if (typeof v === 'string') {
      out.push(v);
      if (BASE64.test(v) && v.length % 4 === 0) out.push(Buffer.from(v, 'base64').toString('utf8'));
    } else if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) {
        out.push(k);
        walk(x);
      }
    }
  };
  walk(JSON.parse(json));
  return out;
}

/** Whether `marker` occurs in the JSON text itself or in any decoded base64 value inside it. */
export function jsonContains(json: string, marker: string): boolean {
  return json.includes(marker) || jsonStrings(json).some((s) => s.includes(marker));
}

/** Every regular file under `dir`, recursively. */
export function walkFiles(dir: string): string[] {
  const files: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    const st = statSync(p);
    if (st.isDirectory()) files.push(...walkFiles(p));
    else if (st.isFile()) files.push(p);
  }
  return files;
}

/** Files under `dir` whose bytes contain `marker` (as UTF-8, or base64 of it at any alignment). */
export function filesContaining(dir: string, marker: string): string[] {
  const needles = [
    Buffer.from(marker, 'utf8'),
    ...[0, 1, 2].map((pad) =>
      Buffer.from(
        Buffer.from('\0'.repeat(pad) + marker)
          .toString('base64')
          .slice(Math.ceil((pad * 4) / 3) + 1, -4),
      ),
    ),
  ];
  return walkFiles(dir).filter((f) => {
    const bytes = readFileSync(f);
    return needles.some((n) => n.length > 4 && bytes.includes(n));
  });
}
