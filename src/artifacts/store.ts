import { createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { ArtifactRef, StepRecord, StepRecordSchema } from '../schemas/artifacts';

const SAFE_SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/**
 * Immutable, content-addressed files under one root. Blobs live at objects/<sha256>; per-run step
 * records live at runs/<run>/steps/<step>.json so a retried activity finds its own finished output.
 */
export class ArtifactStore {
  readonly root: string;

  constructor(root: string) {
    this.root = resolve(root);
  }

  /** Joins run/step names under the root and refuses anything that would leave it. */
  within(...segments: string[]): string {
    for (const s of segments) {
      if (!SAFE_SEGMENT.test(s)) throw new Error(`unsafe artifact path segment ${JSON.stringify(s)}`);
    }
    const p = join(this.root, ...segments);
    const rel = relative(this.root, p);
    if (rel.startsWith('..') || rel.includes(`..${sep}`)) throw new Error(`path escapes the artifact store: ${p}`);
    return p;
  }

  path(ref: ArtifactRef): string {
    if (!/^objects\/[0-9a-f]{2}\/[0-9a-f]{64}$/.test(ref.uri)) throw new Error(`not a store reference: ${ref.uri}`);
    return join(this.root, ref.uri);
  }

  /** Streams lines into a temp file while hashing, then renames it to its content address. */
  writeLines(lines: Iterable<string>, count?: number): ArtifactRef {
    const tmpDir = join(this.root, 'tmp');
    mkdirSync(tmpDir, { recursive: true });
    const tmp = join(tmpDir, `${process.pid}-${randomBytes(6).toString('hex')}`);
    const hash = createHash('sha256');
    const fd = openSync(tmp, 'w');
    let bytes = 0;
    let n = 0;
    try {
      let pending: string[] = [];
      let pendingLen = 0;
      const flush = () => {
        if (!pending.length) return;
        const buf = Buffer.from(pending.join(''), 'utf8');
        hash.update(buf);
        writeSync(fd, buf);
        bytes += buf.length;
        pending = [];
        pendingLen = 0;
      };
      for (const line of lines) {
        pending.push(line.endsWith('\n') ? line : `${line}\n`);
        pendingLen += line.length;
        n++;
        if (pendingLen > 1 << 20) flush();
      }
      flush();
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    return this.adopt(tmp, hash.digest('hex'), bytes, count ?? n);
  }

  writeJsonl(rows: Iterable<unknown>): ArtifactRef {
    const self = this;
    let n = 0;
    function* lines() {
      for (const r of rows) {
        n++;
        yield JSON.stringify(r);
      }
    }
    const ref = self.writeLines(lines());
    return { ...ref, count: n };
  }

  writeBytes(data: string | Buffer, count?: number): ArtifactRef {
    const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    const sha = createHash('sha256').update(buf).digest('hex');
    const ref: ArtifactRef = { uri: `objects/${sha.slice(0, 2)}/${sha}`, sha256: sha, bytes: buf.length, ...(count !== undefined ? { count } : {}) };
    if (!existsSync(this.path(ref))) atomicWrite(this.path(ref), buf);
    return ref;
  }

  writeJson(obj: unknown): ArtifactRef {
    return this.writeBytes(JSON.stringify(obj, null, 2) + '\n');
  }

  private adopt(tmp: string, sha: string, bytes: number, count: number): ArtifactRef {
    const ref: ArtifactRef = { uri: `objects/${sha.slice(0, 2)}/${sha}`, sha256: sha, bytes, count };
    const dest = this.path(ref);
    if (existsSync(dest)) rmSync(tmp, { force: true });
    else {
      mkdirSync(dirname(dest), { recursive: true });
      renameSync(tmp, dest);
    }
    return ref;
  }

  /** True when the blob is there with the right size (and, if asked, the right hash). */
  has(ref: ArtifactRef, checkHash = false): boolean {
    const p = this.path(ref);
    if (!existsSync(p) || statSync(p).size !== ref.bytes) return false;
    return !checkHash || sha256File(p) === ref.sha256;
  }

  readText(ref: ArtifactRef): string {
    return readFileSync(this.path(ref), 'utf8');
  }

  readJson<T>(ref: ArtifactRef): T {
    return JSON.parse(this.readText(ref)) as T;
  }

  readJsonl<T>(ref: ArtifactRef): T[] {
    return parseJsonl<T>(this.readText(ref));
  }

  runDir(runId: string, ...rest: string[]): string {
    return this.within('runs', runKey(runId), ...rest);
  }

  /** A finished step's record for this input, from this run or from a run it may reuse. */
  findStep(runId: string, step: string, fingerprint: string, reuseFrom: string[] = []): StepRecord | undefined {
    for (const run of [runId, ...reuseFrom]) {
      const p = this.runDir(run, 'steps', `${step}.json`);
      if (!existsSync(p)) continue;
      const rec = StepRecordSchema.safeParse(JSON.parse(readFileSync(p, 'utf8')));
      if (!rec.success || rec.data.fingerprint !== fingerprint) continue;
      if (!Object.values(rec.data.outputs).every((r) => this.has(r))) continue;
      if (run === runId) return rec.data;
      const reused: StepRecord = { ...rec.data, runId, reusedFrom: run };
      this.putStep(reused);
      return reused;
    }
    return undefined;
  }

  readStep(runId: string, step: string): StepRecord | undefined {
    const p = this.runDir(runId, 'steps', `${step}.json`);
    return existsSync(p) ? StepRecordSchema.parse(JSON.parse(readFileSync(p, 'utf8'))) : undefined;
  }

  putStep(rec: StepRecord): void {
    atomicWrite(this.runDir(rec.runId, 'steps', `${rec.step}.json`), Buffer.from(JSON.stringify(rec, null, 2) + '\n'));
  }

  listSteps(runId: string): StepRecord[] {
    const dir = this.runDir(runId, 'steps');
    if (!existsSync(dir)) return [];
    return readdirSync(dir)
      .filter((f) => f.endsWith('.json'))
      .map((f) => StepRecordSchema.parse(JSON.parse(readFileSync(join(dir, f), 'utf8'))))
      .sort((a, b) => a.finishedAt.localeCompare(b.finishedAt));
  }
}

/**
 * The folder name for a run. Workflow ids are arbitrary strings (schedules append a timestamp with
 * colons); anything that is not a plain name gets a readable, collision-free form instead.
 */
export function runKey(runId: string): string {
  if (SAFE_SEGMENT.test(runId)) return runId;
  const readable = runId.replace(/[^A-Za-z0-9._-]+/g, '_').replace(/^[^A-Za-z0-9]+/, '').slice(0, 100);
  return `${readable || 'run'}-${createHash('sha256').update(runId).digest('hex').slice(0, 8)}`;
}

export function parseJsonl<T>(text: string): T[] {
  const out: T[] = [];
  for (const line of text.split('\n')) if (line.trim()) out.push(JSON.parse(line) as T);
  return out;
}

export function sha256File(p: string): string {
  return createHash('sha256').update(readFileSync(p)).digest('hex');
}

/** Temp file + fsync + rename: readers see the old file or the whole new one, never a part. */
export function atomicWrite(dest: string, data: Buffer | string): void {
  mkdirSync(dirname(dest), { recursive: true });
  const tmp = `${dest}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const fd = openSync(tmp, 'w');
  try {
    writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, dest);
}
