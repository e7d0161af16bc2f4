import { matchGrade, normalise, tokenF1 } from '../src/grading/match';
import { parseVerdict } from '../src/grading/judge';
import { wilson, accuracy } from '../src/metrics';

describe('match grader', () => {
  it('normalises case, punctuation and articles', () => {
    expect(normalise('The  Nitrogen!')).toBe('nitrogen');
    expect(normalise('pH 6.5')).toBe('ph 6.5');
  });
  it('accepts exact, alias and whole-word containment', () => {
    expect(matchGrade('Nitrogen.', 'nitrogen').correct).toBe(true);
    expect(matchGrade('N', 'nitrogen', ['N']).rationale).toContain('alias');
    expect(matchGrade('It is carbon dioxide, mostly', 'carbon dioxide').correct).toBe(true);
  });
  it('rejects a different answer and partial words', () => {
    expect(matchGrade('phosphorus', 'nitrogen').correct).toBe(false);
    expect(matchGrade('nitrogenase', 'nitrogen').correct).toBe(false);
    expect(matchGrade('', 'nitrogen').correct).toBe(false);
  });
  it('uses token F1 as the last resort', () => {
    expect(tokenF1('drip irrigation system', 'drip irrigation')).toBeCloseTo(0.8);
    expect(matchGrade('irrigation by drip', 'drip irrigation', [], 0.6).correct).toBe(true);
  });
});

describe('judge verdict parsing', () => {
  it('reads strict JSON and JSON inside text', () => {
    expect(parseVerdict('{"score":1,"correct":true,"rationale":"same"}')).toEqual({ score: 1, correct: true, rationale: 'same' });
    expect(parseVerdict('Sure! {"score":0,"correct":false,"rationale":"no"} done')?.correct).toBe(false);
  });
  it('refuses output outside the schema', () => {
    expect(parseVerdict('{"verdict":"maybe"}')).toBeUndefined();
    expect(parseVerdict('{"score":3,"correct":true,"rationale":"x"}')).toBeUndefined();
    expect(parseVerdict('yes')).toBeUndefined();
  });
});

describe('metrics', () => {
  it('gives a Wilson interval that contains the estimate', () => {
    const { low, high } = wilson(8, 10);
    expect(low).toBeGreaterThan(0.44);
    expect(low).toBeLessThan(0.8);
    expect(high).toBeGreaterThan(0.8);
    expect(high).toBeLessThan(0.98);
    expect(accuracy(0, 0)).toMatchObject({ accuracy: 0, low: 0, high: 0 });
  });
});

import { runKey, ArtifactStore } from '../src/artifacts/store';
describe('artifact store paths', () => {
  it('maps any workflow id to one safe folder name, and refuses escapes', () => {
    expect(runKey('agri-demo-20261123-1200-ab12')).toBe('agri-demo-20261123-1200-ab12');
    const k = runKey('nightly-scheduled-2026-11-23T12:57:12Z');
    expect(k).toMatch(/^nightly-scheduled-2026-11-23T12_57_12Z-[0-9a-f]{8}$/);
    expect(runKey('../../etc')).toMatch(/^etc-[0-9a-f]{8}$/);
    expect(runKey('a/b')).not.toBe(runKey('a_b'));
    const store = new ArtifactStore('/tmp/slearn-store');
    expect(store.runDir('../../etc').startsWith('/tmp/slearn-store/runs/')).toBe(true);
    expect(() => store.within('..', 'x')).toThrow(/unsafe/);
  });
});
