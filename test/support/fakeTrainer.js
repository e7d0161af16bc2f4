#!/usr/bin/env node
/*
 * A stand-in for `python -m slearn_trainer train` that implements the trainer contract
 * (DESIGN.md, "Trainer contract") with no dependencies, for orchestration and fault tests.
 *
 *   node test/support/fakeTrainer.js train --base MODEL --data TRAIN.jsonl --out DIR
 *        [--epochs N] [--lr X] [--lora-r R] [--lora-alpha A] [--save-steps S] [--seed K]
 *
 * - total_steps = max(1, ceil(examples / 4) * epochs); each step sleeps FAKE_TRAINER_STEP_MS (30).
 * - One trainer per DIR: DIR/.fake-trainer.running (O_EXCL, holds the pid). A second trainer that
 *   finds a live holder appends a line to DIR/../fake-trainer-violations.log and exits 3.
 *   Every run that held the lock appends {"pid","event":"start|exit","t"} to DIR/fake-trainer-runs.log.
 * - Resumes from the newest complete DIR/checkpoint-N (complete = has state.json; written to a
 *   temp dir and renamed). The adapter (DIR/adapter) is written the same way and lists the trained
 *   {question, answer} pairs in slearn-fake-adapter.json for test/support/fakeModel.ts.
 * - FAKE_TRAINER_CRASH_AT_STEP=K: the first run on DIR that reaches step K prints a retryable
 *   error and exits 1 (once per DIR, remembered in DIR/.fake-trainer-crashed-K).
 * - --init-adapter DIR: continues that adapter (its trained pairs are kept, new ones added).
 *   A learning rate above 0.5 stands for a run that went wrong: the adapter forgets what the
 *   init adapter and the base model knew (slearn-fake-adapter.json "forgetsBase": true).
 * - FAKE_TRAINER_LOG=FILE: start/exit lines also go to FILE (shared by every host of a test).
 * - SLEARN_TRAINER_WATCH_STDIN=1 (set by slearn): stops when stdin closes (its worker died),
 *   unless FAKE_TRAINER_IGNORE_EPIPE=1 makes it a trainer stuck in a long step that notices nothing.
 * - stdout carries only the contract's JSON lines; exit 2 on bad usage or bad data,
 *   130/143 on SIGINT/SIGTERM.
 */
'use strict';
const fs = require('fs');
const path = require('path');

const BATCH = 4;
const startedAt = Date.now();

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

let lockFile;
let runsLog;
let holdsLock = false;

function appendLine(file, obj) {
  try {
    fs.appendFileSync(file, JSON.stringify(obj) + '\n');
  } catch {
    /* best effort */
  }
}

function releaseLock() {
  if (!holdsLock) return;
  holdsLock = false;
  try {
    if (Number(fs.readFileSync(lockFile, 'utf8').trim()) === process.pid) fs.rmSync(lockFile, { force: true });
  } catch {
    /* gone already */
  }
}

function finish(code, extra) {
  if (holdsLock) appendLine(runsLog, { pid: process.pid, event: 'exit', t: Date.now(), code, ...(extra || {}) });
  if (holdsLock && process.env.FAKE_TRAINER_LOG)
    appendLine(process.env.FAKE_TRAINER_LOG, { pid: process.pid, event: 'exit', t: Date.now(), code, ...(extra || {}) });
  releaseLock();
  process.exit(code);
}

function fail(message, code, retryable) {
  emit({ event: 'error', message, retryable: !!retryable });
  finish(code);
}

for (const [sig, code] of [
  ['SIGTERM', 143],
  ['SIGINT', 130],
]) {
  process.on(sig, () => finish(code, { signal: sig }));
}

// Like a real process whose reader died (SIGPIPE), unless told to outlive its worker, which is
// what a trainer blocked in a long step does: FAKE_TRAINER_IGNORE_EPIPE=1 keeps it training.
process.stdout.on('error', (err) => {
  if (err.code !== 'EPIPE') throw err;
  if (process.env.FAKE_TRAINER_IGNORE_EPIPE === '1') {
    process.stdout.write = () => true;
    return;
  }
  finish(141, { signal: 'SIGPIPE' });
});

function parseArgs(argv) {
  if (argv[0] !== 'train') return { error: `usage: fakeTrainer.js train --data TRAIN.jsonl --out DIR [...]; got command ${JSON.stringify(argv[0] || '')}` };
  const flags = {};
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) continue; // stray positional: ignored
    const eq = a.indexOf('=');
    if (eq > 0) {
      flags[a.slice(2, eq)] = a.slice(eq + 1);
    } else if (i + 1 < argv.length && !argv[i + 1].startsWith('--')) {
      flags[a.slice(2)] = argv[++i];
    } else {
      flags[a.slice(2)] = 'true';
    }
  }
  if (!flags.data) return { error: 'missing --data TRAIN.jsonl' };
  if (!flags.out) return { error: 'missing --out DIR' };
  const num = (name, dflt, min) => {
    if (flags[name] === undefined) return dflt;
    const v = Number(flags[name]);
    if (!Number.isFinite(v) || v < min) throw new Error(`--${name} must be a number >= ${min}, got ${JSON.stringify(flags[name])}`);
    return v;
  };
  try {
    return {
      base: flags.base || 'fake-model',
      data: flags.data,
      out: path.resolve(flags.out),
      epochs: Math.max(1, Math.round(num('epochs', 3, 1))),
      lr: num('lr', 2e-4, 0),
      loraR: num('lora-r', 16, 1),
      loraAlpha: num('lora-alpha', 32, 0),
      saveSteps: Math.max(1, Math.round(num('save-steps', 20, 1))),
      seed: num('seed', 0, -Infinity),
      initAdapter: flags['init-adapter'],
      lateData: flags['late-data'],
    };
  } catch (e) {
    return { error: e.message };
  }
}

function alive(pid) {
  if (!pid || pid === process.pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return e.code === 'EPERM';
  }
}

/** Takes DIR/.fake-trainer.running or exits 3 (after logging a violation) when a live trainer holds it. */
function acquireLock(out) {
  for (let tries = 0; tries < 5; tries++) {
    try {
      const fd = fs.openSync(lockFile, 'wx');
      fs.writeSync(fd, String(process.pid));
      fs.closeSync(fd);
      holdsLock = true;
      return;
    } catch (e) {
      if (e.code !== 'EEXIST') throw e;
    }
    let holder = 0;
    try {
      holder = Number(fs.readFileSync(lockFile, 'utf8').trim());
    } catch {
      continue; // removed meanwhile: try again
    }
    if (!holder && tries === 0) {
      // The holder may be between open and write: look again shortly.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
      continue;
    }
    if (alive(holder)) {
      appendLine(path.join(path.dirname(out), 'fake-trainer-violations.log'), { pid: process.pid, holder, dir: out, t: Date.now() });
      fail(`another trainer (pid ${holder}) is running on ${out}`, 3, true);
    }
    // Dead holder: take over.
    fs.rmSync(lockFile, { force: true });
  }
  fail(`could not take ${lockFile}`, 3, true);
}

function readData(file) {
  let text;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    fail(`${file}: cannot read: ${e.message}`, 2, false);
  }
  const pairs = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (!line.trim()) continue;
    const where = `${file}:${i + 1}`;
    let obj;
    try {
      obj = JSON.parse(line);
    } catch (e) {
      fail(`${where}: not valid JSON: ${e.message}`, 2, false);
    }
    if (!obj || typeof obj !== 'object' || !Array.isArray(obj.messages) || obj.messages.length === 0) {
      fail(`${where}: messages: expected a non-empty array of chat messages`, 2, false);
    }
    let question;
    let answer;
    for (const [j, m] of obj.messages.entries()) {
      if (!m || typeof m !== 'object' || typeof m.role !== 'string' || typeof m.content !== 'string') {
        fail(`${where}: messages[${j}]: expected {role, content} with string content`, 2, false);
      }
      if (m.role === 'user') question = m.content;
      if (m.role === 'assistant') answer = m.content;
    }
    if (question === undefined) fail(`${where}: messages: no user message`, 2, false);
    if (answer === undefined) fail(`${where}: messages: no assistant message`, 2, false);
    pairs.push({ question, answer });
  }
  return pairs;
}

function isDir(p) {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function adapterComplete(dir) {
  return fs.existsSync(path.join(dir, 'adapter_config.json')) && fs.existsSync(path.join(dir, 'slearn-fake-adapter.json'));
}

/** Writes files into a temp dir beside `dest`, then renames it into place. */
function writeDirAtomically(dest, files) {
  const tmp = path.join(path.dirname(dest), `.${path.basename(dest)}.tmp-${process.pid}`);
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  for (const [name, content] of Object.entries(files)) fs.writeFileSync(path.join(tmp, name), content);
  fs.rmSync(dest, { recursive: true, force: true }); // an incomplete leftover
  fs.renameSync(tmp, dest);
}

function newestCheckpoint(out, totalSteps) {
  let best = 0;
  for (const name of fs.readdirSync(out)) {
    const m = /^checkpoint-(\d+)$/.exec(name);
    if (!m) continue;
    const step = Number(m[1]);
    if (step > best && step <= totalSteps && fs.existsSync(path.join(out, name, 'state.json'))) best = step;
  }
  return best;
}

function loss(step) {
  return 2.5 / (1 + 0.1 * step) + 0.05;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (args.error) fail(args.error, 2, false);
  const out = args.out;
  fs.mkdirSync(out, { recursive: true });
  lockFile = path.join(out, '.fake-trainer.running');
  runsLog = path.join(out, 'fake-trainer-runs.log');
  acquireLock(out);
  appendLine(runsLog, { pid: process.pid, event: 'start', t: Date.now() });
  // One log shared by every host of a test: trainers on different scratch disks must not overlap either.
  if (process.env.FAKE_TRAINER_LOG) appendLine(process.env.FAKE_TRAINER_LOG, { pid: process.pid, event: 'start', t: Date.now(), out });

  const pairs = readData(args.data);
  // --late-data: trained once, in the second half (the real trainer lays every epoch out in one pass)
  const late = args.lateData ? readData(args.lateData) : [];
  const stepsPerEpoch = Math.ceil(pairs.length / BATCH);
  const totalSteps = Math.max(1, late.length ? Math.ceil((pairs.length * args.epochs + late.length) / BATCH) : stepsPerEpoch * args.epochs);
  const adapterDir = path.join(out, 'adapter');

  if (process.env.SLEARN_TRAINER_WATCH_STDIN === '1' && process.env.FAKE_TRAINER_IGNORE_EPIPE !== '1') {
    process.stdin.on('end', () => finish(143, { signal: 'stdin-closed' }));
    process.stdin.on('error', () => finish(143, { signal: 'stdin-closed' }));
    process.stdin.resume();
  }
  let inherited = [];
  if (args.initAdapter) {
    try {
      inherited = JSON.parse(fs.readFileSync(path.join(args.initAdapter, 'slearn-fake-adapter.json'), 'utf8')).trained;
    } catch (e) {
      fail(`--init-adapter ${args.initAdapter}: not an adapter (${e.message})`, 2, false);
    }
  }
  const forgetsBase = args.lr > 0.5;
  const known = new Map((forgetsBase ? [] : inherited).map((t) => [t.question, t]));
  for (const p of [...pairs, ...late]) known.set(p.question, p);

  if (isDir(adapterDir) && adapterComplete(adapterDir)) {
    emit({ event: 'start', total_steps: totalSteps, resumed_from_step: totalSteps });
    emit({ event: 'done', adapter: adapterDir, steps: totalSteps, train_seconds: 0 });
    finish(0);
  }

  const stepMs = Math.max(0, Number(process.env.FAKE_TRAINER_STEP_MS ?? 30) || 0);
  const crashAt = Number(process.env.FAKE_TRAINER_CRASH_AT_STEP || 0);
  const resumed = newestCheckpoint(out, totalSteps);
  emit({ event: 'start', total_steps: totalSteps, resumed_from_step: resumed, device: 'cpu', precision: 'fp32' });

  for (let step = resumed + 1; step <= totalSteps; step++) {
    await sleep(stepMs);
    if (crashAt && step === crashAt) {
      const marker = path.join(out, `.fake-trainer-crashed-${crashAt}`);
      if (!fs.existsSync(marker)) {
        fs.writeFileSync(marker, String(process.pid));
        fail(`injected crash at step ${step} (FAKE_TRAINER_CRASH_AT_STEP)`, 1, true);
      }
    }
    const epoch = stepsPerEpoch ? Math.round((step / stepsPerEpoch) * 1e4) / 1e4 : args.epochs;
    emit({ event: 'progress', step, total_steps: totalSteps, loss: loss(step), epoch });
    if (step % args.saveSteps === 0) {
      const ckpt = path.join(out, `checkpoint-${step}`);
      writeDirAtomically(ckpt, {
        'state.json': JSON.stringify({ step, total_steps: totalSteps, loss: loss(step), epoch, seed: args.seed, pid: process.pid }),
      });
      emit({ event: 'checkpoint', step, path: ckpt });
    }
  }

  writeDirAtomically(adapterDir, {
    'adapter_config.json': JSON.stringify(
      {
        base_model_name_or_path: args.base,
        peft_type: 'LORA',
        r: args.loraR,
        lora_alpha: args.loraAlpha,
        learning_rate: args.lr,
        epochs: args.epochs,
        seed: args.seed,
        fake: true,
      },
      null,
      2,
    ),
    'slearn-fake-adapter.json': JSON.stringify({ trained: [...known.values()], forgetsBase }),
  });
  emit({ event: 'done', adapter: adapterDir, steps: totalSteps, train_seconds: (Date.now() - startedAt) / 1000 });
  finish(0);
}

main().catch((e) => {
  emit({ event: 'error', message: `fake trainer failed: ${e && e.message ? e.message : String(e)}`, retryable: true });
  finish(1);
});
