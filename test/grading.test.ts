import { matchGrade, normalise, tokenF1, tokens } from '../src/grading/match';
import { judgeMessages, parseVerdict } from '../src/grading/judge';
import { accuracy, mcnemar, wilson } from '../src/metrics';
import { answerAndGrade, knowledgeLevel } from '../src/pipeline/answering';
import type { ModelClient } from '../src/model/client';
import type { ItemGrade } from '../src/schemas/results';
import { decide } from '../src/pipeline/filter';
import { gate } from '../src/pipeline/promote';
import { ConfigSchema, FilterSchema, PromoteSchema } from '../src/schemas/config';
import type { EvalResult } from '../src/schemas/run';
import { runKey, runPrefix } from '../src/store/steps';
import { checkKey } from '../src/store/backend';

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

describe('match grader in Chinese (a script without spaces)', () => {
  it('cuts Chinese into characters and keeps Latin words and numbers whole', () => {
    expect(tokens('李白《将进酒》')).toEqual(['李', '白', '将', '进', '酒']);
    expect(tokens('DNA复制发生在1963年')).toEqual(['dna', '复', '制', '发', '生', '在', '1963', '年']);
    expect(tokens('The answer is 李白')).toEqual(['answer', 'is', '李', '白']);
    // Full-width letters, digits and punctuation fold to ASCII (NFKC); CJK punctuation is a separator.
    expect(normalise('ＤＮＡ聚合酶！')).toBe('dna 聚 合 酶');
    expect(normalise('１２３，「好」。')).toBe('123 好');
  });

  it('accepts a right answer with or without full-width punctuation', () => {
    expect(matchGrade('李白《将进酒》', '李白《将进酒》').rationale).toBe('exact match');
    expect(matchGrade('李白 将进酒', '李白《将进酒》').correct).toBe(true);
    expect(matchGrade('《周南·关雎》', '周南关雎').correct).toBe(true);
    expect(matchGrade('苏轼。', '苏轼').correct).toBe(true);
    expect(matchGrade('作者是苏轼，北宋人。', '苏轼')).toMatchObject({ correct: true, rationale: 'contains "苏轼"' });
  });

  it('rejects a wrong answer that shares characters with the reference, with partial credit', () => {
    const g = matchGrade('李商隐', '李白');
    expect(g.correct).toBe(false);
    expect(g.score).toBeCloseTo(0.4); // one shared character: P 1/3, R 1/2
    expect(matchGrade('杜牧', '杜甫')).toMatchObject({ correct: false, score: 0.5 });
    // Chinese F1 counts the longest shared run of characters (CMRC 2018, DRCD), not a bag of them.
    expect(matchGrade('白李', '李白')).toMatchObject({ correct: false, score: 0.5 });
    expect(tokenF1('周南·关雎', '周南·桃夭')).toBeCloseTo(0.5);
    // Whole-word tokens would have given 0 here: the answer is one "word" without spaces.
    expect(tokenF1('孙膑和庞涓', '孙膑')).toBeCloseTo(4 / 7);
    expect(matchGrade('孙膑和庞涓', '孙膑').correct).toBe(true); // contains the reference
  });

  it('grades mixed Chinese and Latin answers', () => {
    expect(matchGrade('mRNA前体', 'mRNA 前体').correct).toBe(true);
    expect(matchGrade('是mRNA', 'mRNA').rationale).toBe('contains "mRNA"');
    expect(matchGrade('tRNA', 'mRNA').correct).toBe(false);
    expect(matchGrade('爱德温·哈勃（Edwin Hubble）', '爱德温·哈伯', ['Edwin Hubble'])).toMatchObject({ correct: true, rationale: 'contains "Edwin Hubble"' });
  });

  it('follows the configured token mode', () => {
    // words: a Chinese answer without spaces is one token, so F1 is all or nothing.
    expect(matchGrade('李商隐', '李白', [], { tokens: 'words' }).score).toBe(0);
    expect(matchGrade('李白', '李白', [], { tokens: 'words' }).correct).toBe(true);
    // characters: every letter is a token, for scripts auto does not cut (here Thai).
    expect(tokens('กรุงเทพ', 'characters')).toEqual(['ก', 'รุ', 'ง', 'เ', 'ท', 'พ']);
    expect(tokens('กรุงเทพ')).toEqual(['กรุงเทพ']);
    expect(matchGrade('nitrogen', 'nitrogenase', [], { tokens: 'characters', f1Threshold: 0.8 }).correct).toBe(true);
    expect(matchGrade('nitrogen', 'nitrogenase', [], 0.8).correct).toBe(false);
  });
});

describe('judge prompt', () => {
  const user = (order?: 'reference-first' | 'candidate-first') => judgeMessages('What gas?', 'nitrogen', ['N2'], ' N,\n gas ', order)[1].content as string;
  it('puts the reference (with its aliases) before the candidate, or after it when asked', () => {
    expect(user()).toBe('Question: What gas?\nReference answer: nitrogen\nAccepted aliases: N2\nCandidate answer: N, gas');
    expect(user('candidate-first')).toBe('Question: What gas?\nCandidate answer: N, gas\nReference answer: nitrogen\nAccepted aliases: N2');
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
    // Ungradeable items are reported beside the accuracy, never counted as wrong.
    expect(accuracy(3, 4, 6)).toMatchObject({ correct: 3, total: 4, ungradeable: 6, accuracy: 0.75 });
  });

  it('McNemar: an exact two-sided binomial test of the discordant pairs', () => {
    // b=10, c=2: 2 * P(X <= 2 | n=12, p=1/2) = 2 * (1 + 12 + 66) / 4096 ≈ 0.0386.
    expect(mcnemar(10, 2)).toBeCloseTo(0.0386, 3);
    expect(mcnemar(2, 10)).toBeCloseTo(mcnemar(10, 2), 12); // symmetric
    expect(mcnemar(0, 0)).toBe(1); // no discordant pair: no evidence either way
    expect(mcnemar(5, 5)).toBe(1); // capped at 1
    expect(mcnemar(6, 0)).toBeCloseTo(2 / 64, 12);
    expect(mcnemar(20, 0)).toBeLessThan(1e-5);
  });
});

describe('knowledge levels (Gekhman et al. 2024)', () => {
  it('from the greedy answer and the sampled ones', () => {
    expect(knowledgeLevel(true, [])).toBe('known');
    expect(knowledgeLevel(true, [true, true, true])).toBe('known');
    expect(knowledgeLevel(true, [true, false, true])).toBe('maybeKnown');
    expect(knowledgeLevel(false, [false, true])).toBe('weaklyKnown');
    expect(knowledgeLevel(false, [false, false])).toBe('unknown');
    expect(knowledgeLevel(false, [])).toBe('unknown');
  });
});

describe('the filter decision', () => {
  const sample = (correct: boolean) => ({ answer: correct ? 'right' : 'wrong', correct, score: correct ? 1 : 0, rationale: '' });
  const grade = (id: string, greedy: boolean, samples: boolean[] = []): ItemGrade => ({
    id,
    status: 'graded',
    greedy: sample(greedy),
    samples: samples.map(sample),
    level: knowledgeLevel(greedy, samples),
  });
  const defaults = FilterSchema.parse({});

  it('by default trains on what the greedy answer got wrong and drops what the model knew, each with its reason', () => {
    expect(defaults).toEqual({ trainOn: ['weaklyKnown', 'unknown'], replayFraction: 0, replayWhen: 'throughout', replayAnswer: 'reference', seed: 0 });
    expect(decide(grade('a', true), defaults)).toEqual({ decision: 'dropped', why: 'known (greedy right): already known, not trained on' });
    expect(decide(grade('b', false), defaults)).toEqual({ decision: 'kept', why: 'unknown (greedy wrong): trained on' });
    expect(decide(grade('c', false, [true, false]), defaults)).toEqual({ decision: 'kept', why: 'weaklyKnown (greedy wrong, 1/2 samples right): trained on' });
    expect(decide(grade('d', true, [true, false]), defaults)).toEqual({
      decision: 'dropped',
      why: 'maybeKnown (greedy right, 1/2 samples right): already known, not trained on',
    });
  });

  it('trains on the levels the config names', () => {
    const f = FilterSchema.parse({ trainOn: ['maybeKnown', 'weaklyKnown', 'unknown'] });
    expect(decide(grade('d', true, [true, false]), f).decision).toBe('kept');
    expect(decide(grade('a', true, [true, true]), f).decision).toBe('dropped');
    expect(decide(grade('b', false), FilterSchema.parse({ trainOn: ['known'] })).decision).toBe('dropped');
  });

  it('an ungradeable item is neither trained on nor counted as wrong, and says why', () => {
    const d = decide({ id: 'u', status: 'ungradeable', samples: [], error: 'judge output did not fit the schema after 3 attempts' }, defaults);
    expect(d.decision).toBe('ungradeable');
    expect(d.why).toMatch(/not graded \(judge output did not fit the schema.*\): neither trained on nor counted as wrong/);
  });

  it('replays a seeded share of the known items: stable per item, about the fraction asked', () => {
    const ids = Array.from({ length: 400 }, (_, i) => `k-${i}`);
    expect(decide(grade('a', true), FilterSchema.parse({ replayFraction: 1 }))).toEqual({
      decision: 'replayed',
      why: 'known (greedy right) but replayed (replayFraction 1)',
    });
    const half = FilterSchema.parse({ replayFraction: 0.5, seed: 3 });
    const first = ids.map((id) => decide(grade(id, true), half).decision);
    expect(ids.map((id) => decide(grade(id, true), half).decision)).toEqual(first);
    const replayed = first.filter((d) => d === 'replayed').length;
    expect(replayed).toBeGreaterThan(150);
    expect(replayed).toBeLessThan(250);
    expect(first.every((d) => d === 'replayed' || d === 'dropped')).toBe(true);
    // Another seed draws another share; unknown items are trained on whatever the draw.
    expect(ids.map((id) => decide(grade(id, true), { ...half, seed: 4 }).decision)).not.toEqual(first);
    expect(ids.every((id) => decide(grade(id, false), half).decision === 'kept')).toBe(true);
  });
});

describe('the promotion gate', () => {
  const acc = (correct: number, total = 100) => accuracy(correct, total);
  const ev = (over: Partial<EvalResult>): EvalResult => ({
    items: 100,
    base: acc(50),
    tuned: acc(70),
    passes: [],
    results: { uri: 'x', sha256: '0'.repeat(64), bytes: 0 },
    ...over,
  });
  const p = PromoteSchema.parse({});

  it('promotes a tuned model that beats the base and keeps what the model knew', () => {
    const g = gate(p, ev({ retention: acc(95) }), false);
    expect(g.pass).toBe(true);
    expect(g.gain).toBeCloseTo(0.2, 12);
    expect(g.forgetting).toBeCloseTo(0.05, 12);
    expect(g.reason).toMatch(/^promoted: tuned 70\.0% vs base 50\.0% on 100 held-out items: gain 20\.0 points; forgot 5\.0% of 100 known items/);
  });

  it('compares with the current model when there is one, not with the base', () => {
    const g = gate(p, ev({ current: acc(80), retention: acc(100) }), true);
    expect(g.pass).toBe(false);
    expect(g.gain).toBeCloseTo(-0.1, 12);
    expect(g.reason).toMatch(/^refused: tuned 70\.0% vs current 80\.0%.*\(needs more than 0\.0\)/);
  });

  it('refuses a model that forgot too much, or that gained no more than minGain', () => {
    const forgot = gate(p, ev({ retention: acc(80) }), false);
    expect(forgot.pass).toBe(false);
    expect(forgot.reason).toMatch(/^refused: .*forgot 20\.0% of 100 known items \(at most 10\.0% allowed\)/);
    expect(gate({ ...p, minGain: 0.2 }, ev({}), false).pass).toBe(false); // 0.2 is not more than 0.2
    expect(gate({ ...p, minGain: 0.19 }, ev({}), false).pass).toBe(true);
    expect(gate(p, ev({ tuned: acc(50) }), false).pass).toBe(false); // equal is no gain
  });

  it('says when there was no retention check, and never promotes with promotion disabled', () => {
    expect(gate(p, ev({}), false).reason).toContain('no retention check');
    const off = gate({ ...p, enabled: false }, ev({ retention: acc(100) }), false);
    expect(off.pass).toBe(false);
    expect(off.reason).toMatch(/^refused: .*promotion is disabled for this config/);
    const withP = gate(p, ev({ vsReference: { a: 'base', b: 'tuned', fixed: 10, broken: 2, pValue: mcnemar(10, 2) } }), false);
    expect(withP.reason).toContain('10 fixed, 2 broken, McNemar p=0.039');
  });
});

describe('store keys', () => {
  it('maps any workflow id to one safe folder name', () => {
    expect(runKey('agri-demo-20261123-1200-ab12')).toBe('agri-demo-20261123-1200-ab12');
    expect(runKey('nightly-scheduled-2026-11-23T12:57:12Z')).toMatch(/^nightly-scheduled-2026-11-23T12_57_12Z-[0-9a-f]{8}$/);
    expect(runKey('../../etc')).toMatch(/^etc-[0-9a-f]{8}$/);
    expect(runKey('a/b')).not.toBe(runKey('a_b'));
    expect(runKey('')).toMatch(/^run-[0-9a-f]{8}$/);
    for (const id of ['../../etc', 'a/b', '..', '.hidden', 'x'.repeat(300), 'nightly 2026:01'])
      expect(checkKey(`${runPrefix(id)}/steps/prepare.json`)).toBeTruthy();
  });

  it('refuses keys that could escape the store or hide', () => {
    for (const bad of ['../x', 'runs/../x', 'runs/./x', 'runs//x', '/abs', 'runs/.hidden', '', 'runs/a b', 'runs/x/../../etc/passwd']) {
      expect(() => checkKey(bad)).toThrow(/not a valid store key/);
    }
    expect(checkKey('runs/x/steps/answer-grade-000001.json')).toBe('runs/x/steps/answer-grade-000001.json');
    expect(checkKey('runs/x/', true)).toBe('runs/x/');
    expect(() => checkKey('runs/x/')).toThrow(/not a valid store key/);
  });
});

describe('answering with the match grader', () => {
  // The run's grader block reaches matchGrade whole: `tokens` decides, not only f1Threshold.
  const item = { id: 'q1', question: '《红楼梦》的作者是谁？', answer: '曹雪芹' };
  const model = { chat: async () => ['作者是曹雪芹'] } as unknown as ModelClient;
  const gradeWith = (tokens: 'words' | 'characters') => {
    const config = ConfigSchema.parse({
      name: 'zh',
      dataset: 'd.jsonl',
      model: { baseUrl: 'http://127.0.0.1:1/v1', name: 'm' },
      grader: { type: 'match', tokens },
    });
    return answerAndGrade(config, { model }, 'm')(item, new AbortController().signal);
  };
  it('cuts a Chinese answer as the config says', async () => {
    expect((await gradeWith('characters')).greedy?.correct).toBe(true);
    expect((await gradeWith('words')).greedy?.correct).toBe(false);
  });
});
