/**
 * One state directory for everything: with SLEARN_HOME set, a config without `artifacts` writes its
 * runs to $SLEARN_HOME/artifacts, and `slearn models` reads the registry from the same place.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Registry } from '../src/registry/registry';
import { openStore } from '../src/store/open';
import { ROOT, tempDir } from './support/stack';

const slearn = (args: string[], env: NodeJS.ProcessEnv) =>
  spawnSync(process.execPath, [join(ROOT, 'bin', 'slearn.js'), ...args], { env: { ...process.env, SLEARN_ARTIFACTS: '', ...env }, encoding: 'utf8' });

describe('SLEARN_HOME', () => {
  it('moves the default artifact store of runs, and `slearn models` reads that one', async () => {
    const home = tempDir('slearn-home-');
    const store = pathToFileURL(join(home, 'artifacts')).href;
    const v = slearn(['validate', join(ROOT, 'examples', 'agriculture', 'slearn.yaml')], { SLEARN_HOME: home });
    expect(v.status).toBe(0);
    expect(v.stdout).toContain(`artifacts in ${store}`);

    // A version recorded in that store is what `models list` shows (and nothing from ./.slearn).
    const reg = new Registry(await openStore(store), 'agri-demo');
    await reg.recordRun({
      runId: 'r1',
      at: new Date().toISOString(),
      dataSha: 'd',
      settingsSha: 's',
      currentVersion: null,
      outcome: 'no-training',
      reason: 'test',
    });
    const runs = slearn(['models', 'history', 'agri-demo', '--json'], { SLEARN_HOME: home });
    expect(runs.status).toBe(0);
    expect(JSON.parse(runs.stdout).runs.map((r: { runId: string }) => r.runId)).toEqual(['r1']);
    const other = slearn(['models', 'history', 'agri-demo', '--json'], { SLEARN_HOME: tempDir('slearn-home-') });
    expect(JSON.parse(other.stdout).runs).toEqual([]);
  });

  it('SLEARN_ARTIFACTS names the default store of both, when set', () => {
    const dir = tempDir('slearn-artifacts-');
    const v = slearn(['validate', join(ROOT, 'examples', 'agriculture', 'slearn.yaml')], { SLEARN_HOME: tempDir('slearn-home-'), SLEARN_ARTIFACTS: dir });
    expect(v.status).toBe(0);
    expect(v.stdout).toContain(`artifacts in ${pathToFileURL(dir).href}`);
  });
});
