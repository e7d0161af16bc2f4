#!/usr/bin/env node
// Runs both suites and prints one closing line CI can read: "N passed, N failed".
// Two lanes side by side (2 cores): the heavy jest project (real trainer, real model) then pytest,
// beside the main jest project. Each lane is serial; the lanes share nothing but the CPU.
const { spawn } = require('node:child_process');
const { existsSync, readFileSync, readdirSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join } = require('node:path');

// The two lanes put several torch processes (trainers, model servers, pytest) on the same cores.
// OpenMP's waiting threads spin by default and then starve each other: three SmolLM2 trainings at
// once on 2 cores took 600 s, 94 s with passive waiting (one alone: 44 s, 77 s passive). Every
// process the suite starts inherits this (the trainer's environment lets OMP_* through).
process.env.OMP_WAIT_POLICY ??= 'PASSIVE';

// Every temporary file of the run (jest's, pytest's and their processes') under one root, removed at
// the end: left in /tmp, each run leaked a few GB of stores and checkpoints (SLEARN_KEEP_TEST_TMP=1 keeps it).
// The root is named after this process: a run that never reached its end (Ctrl-C, a CI timeout, kill -9)
// left its root behind, and the next run removes it once that process is gone (unless it was kept).
const ROOT_NAME = /^slearn-tests-(\d+)-/;
const KEPT = 'KEPT';
const alive = (pid) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return e.code === 'EPERM';
  }
};
for (const name of readdirSync(tmpdir())) {
  const m = ROOT_NAME.exec(name);
  const root = join(tmpdir(), name);
  if (m && !alive(Number(m[1])) && !existsSync(join(root, KEPT))) rmSync(root, { recursive: true, force: true, maxRetries: 3 });
}
const tmpRoot = mkdtempSync(join(tmpdir(), `slearn-tests-${process.pid}-`));
process.env.TMPDIR = tmpRoot;

const dir = '.slearn/test-results';
mkdirSync(dir, { recursive: true });
const junit = `${dir}/pytest.xml`;

/** Runs a command with inherited output; resolves with its exit status and seconds taken. */
function run(cmd, args) {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { stdio: 'inherit' });
    p.on('exit', (code, signal) => resolve({ status: code ?? (signal ? 1 : 0), seconds: (Date.now() - t0) / 1000 }));
  });
}
const jest = (project) => run('npx', ['jest', '--runInBand', '--forceExit', '--selectProjects', project, '--json', `--outputFile=${dir}/jest-${project}.json`]);

async function main() {
  const heavyLane = (async () => ({
    heavy: await jest('heavy'),
    pytest: await run('.venv/bin/python', ['-m', 'pytest', '-q', 'trainer/tests', `--junitxml=${junit}`]),
  }))();
  const [{ heavy, pytest }, main] = await Promise.all([heavyLane, jest('main')]);

  let passed = 0;
  let failed = 0;
  for (const project of ['heavy', 'main']) {
    try {
      const j = JSON.parse(readFileSync(`${dir}/jest-${project}.json`, 'utf8'));
      passed += j.numPassedTests;
      failed += j.numFailedTests + (j.numRuntimeErrorTestSuites || 0);
    } catch {
      failed += 1; // no report: the lane itself failed
    }
  }
  try {
    const x = readFileSync(junit, 'utf8');
    const m = x.match(/<testsuite [^>]*>/);
    const attr = (k) => Number((m[0].match(new RegExp(`${k}="(\\d+)"`)) || [0, 0])[1]);
    const total = attr('tests');
    const bad = attr('failures') + attr('errors');
    passed += total - bad - attr('skipped');
    failed += bad;
  } catch {
    failed += 1;
  }
  console.log(
    `\njest heavy exit ${heavy.status} (${heavy.seconds.toFixed(0)} s), pytest exit ${pytest.status} (${pytest.seconds.toFixed(0)} s), jest main exit ${main.status} (${main.seconds.toFixed(0)} s)`,
  );
  if (process.env.SLEARN_KEEP_TEST_TMP === '1') {
    writeFileSync(join(tmpRoot, KEPT), '');
    console.log(`test files kept in ${tmpRoot}`);
  } else rmSync(tmpRoot, { recursive: true, force: true, maxRetries: 3 });
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(heavy.status === 0 && main.status === 0 && pytest.status === 0 && failed === 0 ? 0 : 1);
}
main();
