#!/usr/bin/env node
// Runs both suites and prints one closing line CI can read: "N passed, N failed".
const { spawnSync } = require('node:child_process');
const { readFileSync, mkdirSync } = require('node:fs');

mkdirSync('.slearn/test-results', { recursive: true });
const jestOut = '.slearn/test-results/jest.json';
const junit = '.slearn/test-results/pytest.xml';
const jest = spawnSync('npx', ['jest', '--runInBand', '--forceExit', '--json', `--outputFile=${jestOut}`], { stdio: 'inherit' });
const pytest = spawnSync('.venv/bin/python', ['-m', 'pytest', '-q', 'trainer/tests', `--junitxml=${junit}`], { stdio: 'inherit' });

let passed = 0;
let failed = 0;
try {
  const j = JSON.parse(readFileSync(jestOut, 'utf8'));
  passed += j.numPassedTests;
  failed += j.numFailedTests + (j.numRuntimeErrorTestSuites || 0);
} catch {
  failed += 1;
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
console.log(`\njest exit ${jest.status}, pytest exit ${pytest.status}`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(jest.status === 0 && pytest.status === 0 && failed === 0 ? 0 : 1);
