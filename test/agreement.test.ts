import { agreement, confusion, describeAgreement, disagreements, kappaWords } from '../src/metrics';
import { JudgeTally } from '../src/pipeline/agreement';
import type { ItemGrade } from '../src/schemas/results';

describe("judge against rule grader: Cohen's κ and the 2×2 table", () => {
  const pairs = (bothCorrect: number, onlyA: number, onlyB: number, bothWrong: number): [boolean, boolean][] => [
    ...Array.from({ length: bothCorrect }, (): [boolean, boolean] => [true, true]),
    ...Array.from({ length: onlyA }, (): [boolean, boolean] => [true, false]),
    ...Array.from({ length: onlyB }, (): [boolean, boolean] => [false, true]),
    ...Array.from({ length: bothWrong }, (): [boolean, boolean] => [false, false]),
  ];

  it('counts the table from paired verdicts', () => {
    expect(
      confusion([
        [true, true],
        [true, false],
        [false, true],
        [false, false],
        [false, false],
      ]),
    ).toEqual({ bothCorrect: 1, onlyA: 1, onlyB: 1, bothWrong: 2 });
  });

  it('gives the published κ of textbook tables', () => {
    // Wikipedia's "Cohen's kappa" worked example: 50 grant proposals read by two readers,
    // 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no: pₒ 0.70, pₑ 0.50, κ 0.40.
    const a = agreement(confusion(pairs(20, 5, 10, 15)));
    expect(a.items).toBe(50);
    expect(a.observed).toBeCloseTo(0.7, 12);
    expect(a.expected).toBeCloseTo(0.5, 12);
    expect(a.kappa).toBeCloseTo(0.4, 12);
    // Cohen (1960) standard error √(pₒ(1−pₒ) / (n(1−pₑ)²)) = √(0.21 / 12.5) ≈ 0.1296.
    expect(a.low).toBeCloseTo(0.4 - 1.96 * Math.sqrt(0.21 / 12.5), 12);
    expect(a.high).toBeCloseTo(0.4 + 1.96 * Math.sqrt(0.21 / 12.5), 12);
    // The same article's two tables with the same 60% raw agreement and different κ.
    expect(agreement({ bothCorrect: 45, onlyA: 15, onlyB: 25, bothWrong: 15 }).kappa).toBeCloseTo(0.1304, 4);
    expect(agreement({ bothCorrect: 25, onlyA: 35, onlyB: 5, bothWrong: 35 }).kappa).toBeCloseTo(0.2593, 4);
  });

  it('is 1 for perfect agreement, 0 for chance, negative below chance, and null when undefined', () => {
    expect(agreement(confusion(pairs(7, 0, 0, 3))).kappa).toBe(1);
    expect(agreement({ bothCorrect: 25, onlyA: 25, onlyB: 25, bothWrong: 25 }).kappa).toBeCloseTo(0, 12);
    expect(agreement({ bothCorrect: 0, onlyA: 10, onlyB: 10, bothWrong: 0 }).kappa).toBe(-1);
    // A judge that says "wrong" to everything agrees 90% with a grader that says so 90% of the time: κ 0.
    const lazy = agreement({ bothCorrect: 0, onlyA: 0, onlyB: 10, bothWrong: 90 });
    expect(lazy.observed).toBeCloseTo(0.9, 12);
    expect(lazy.kappa).toBeCloseTo(0, 12);
    expect(agreement({ bothCorrect: 0, onlyA: 0, onlyB: 0, bothWrong: 12 }).kappa).toBeNull();
    expect(agreement({ bothCorrect: 0, onlyA: 0, onlyB: 0, bothWrong: 0 })).toMatchObject({ items: 0, kappa: null });
  });

  it('says in words when the judge is not to be trusted on its own', () => {
    expect([kappaWords(-0.1), kappaWords(0.1), kappaWords(0.3), kappaWords(0.5), kappaWords(0.7), kappaWords(0.9)]).toEqual([
      'worse than chance',
      'slight',
      'fair',
      'moderate',
      'substantial',
      'almost perfect',
    ]);
    const low = describeAgreement(agreement({ bothCorrect: 45, onlyA: 15, onlyB: 25, bothWrong: 15 }));
    expect(low).toMatch(
      /^the judge agrees with the rule grader on 60\.0% of 100 items, κ 0\.13 \(95% CI -?0\.\d\d to 0\.\d\d, slight\); 15 correct only for the judge, 25 only for the rule grader\./,
    );
    expect(low).toContain('not to be trusted on its own');
    const high = describeAgreement(agreement({ bothCorrect: 400, onlyA: 10, onlyB: 10, bothWrong: 580 }));
    expect(high).toMatch(/κ 0\.96 .*almost perfect/);
    expect(high).not.toMatch(/trust/);
    // A high κ on few items: the interval still reaches low agreement.
    expect(describeAgreement(agreement({ bothCorrect: 3, onlyA: 1, onlyB: 0, bothWrong: 4 }))).toMatch(
      /κ 0\.75 \(95% CI 0\.29 to 1\.00, substantial\).*too few items/,
    );
    expect(describeAgreement(agreement({ bothCorrect: 0, onlyA: 0, onlyB: 0, bothWrong: 3 }))).toMatch(/κ undefined: .* all 3 items/);
    // A judge that accepts everything: κ 0 by construction, and the sentence says why.
    expect(describeAgreement(agreement({ bothCorrect: 2, onlyA: 8, onlyB: 0, bothWrong: 0 }))).toBe(
      "the judge agrees with the rule grader on 20.0% of 10 items, κ 0.00 (slight): the judge accepted every answer, so agreement is no better than chance by construction. The judge's accuracy is not to be trusted on its own: read it beside the rule grader's.",
    );
  });
});

describe('examples of each kind of disagreement', () => {
  interface Row {
    id: string;
    judge?: boolean;
    rule: boolean;
  }
  const rows: Row[] = Array.from({ length: 200 }, (_, i) => ({ id: `q${i}`, judge: i % 10 === 3 ? undefined : i % 3 === 0, rule: i % 4 === 0 }));
  const verdicts = (r: Row) => (r.judge === undefined ? undefined : ([r.judge, r.rule] as const));
  const pick = (items: Row[], seed = 0) => disagreements(items, verdicts, (r) => r.id, { perKind: 3, seed });

  it('keeps a few of each kind, each a real disagreement of that kind', () => {
    const d = pick(rows);
    expect(d.onlyA).toHaveLength(3);
    expect(d.onlyB).toHaveLength(3);
    for (const r of d.onlyA) expect([r.judge, r.rule]).toEqual([true, false]);
    for (const r of d.onlyB) expect([r.judge, r.rule]).toEqual([false, true]);
    // Items the judge could not grade are never examples.
    expect([...d.onlyA, ...d.onlyB].some((r) => r.judge === undefined)).toBe(false);
  });

  it('picks the same examples whatever the order, and others with another seed', () => {
    const d = pick(rows);
    const ids = (x: Row[]) => x.map((r) => r.id);
    const shuffled = [...rows].reverse();
    expect(ids(pick(shuffled).onlyA)).toEqual(ids(d.onlyA));
    expect(ids(pick(shuffled).onlyB)).toEqual(ids(d.onlyB));
    expect(ids(pick(rows, 1).onlyA)).not.toEqual(ids(d.onlyA));
  });

  it('returns fewer when there are fewer, and none when the graders agree', () => {
    const few = pick(rows.slice(0, 5));
    // q0 agree (both correct), q1 and q2 agree (both wrong), q3 has no judge verdict, q4 only the rule grader accepts.
    expect(few).toEqual({ onlyA: [], onlyB: [rows[4]] });
    expect(pick(rows.map((r) => ({ ...r, judge: r.rule })))).toEqual({ onlyA: [], onlyB: [] });
  });
});

describe('a judged run measures its judge (JudgeTally, as the filter step uses it)', () => {
  const item = (i: number) => ({ id: `q${i}`, question: `question ${i}`, answer: `reference ${i}` });
  const grade = (i: number, judge: boolean, rule: boolean | undefined): ItemGrade => ({
    id: `q${i}`,
    status: 'graded',
    greedy: { answer: `answer ${i}`, correct: judge, score: judge ? 1 : 0, rationale: `because ${i}`, ...(rule !== undefined ? { rule } : {}) },
    samples: [],
  });

  it('tallies the greedy verdicts, keeps a few disagreements of each kind, and says κ in words', () => {
    const t = new JudgeTally(0, 2);
    // 6 both right, 5 right for the judge only, 1 right for the rule only, 8 both wrong.
    const verdicts: [boolean, boolean][] = [...pairsOf(6, 5, 1, 8)];
    verdicts.forEach(([j, r], i) => t.add(item(i), grade(i, j, r)));
    t.add(item(99), { id: 'q99', status: 'ungradeable', samples: [], error: 'off schema' });
    const a = t.result()!;
    expect(a.table).toEqual({ bothCorrect: 6, onlyA: 5, onlyB: 1, bothWrong: 8 });
    expect(a.items).toBe(20);
    expect(a.kappa).toBeCloseTo(agreement(a.table).kappa!, 12);
    expect(a.words).toBe(describeAgreement(agreement(a.table)));
    expect(a.examples.judgeOnly).toHaveLength(2);
    expect(a.examples.ruleOnly).toHaveLength(1);
    expect(a.examples.judgeOnly.every((x) => x.judge && x.answer.startsWith('answer') && x.rationale.startsWith('because'))).toBe(true);
    expect(a.examples.ruleOnly[0]).toMatchObject({ id: 'q11', judge: false, reference: 'reference 11' });
  });

  it('has nothing to say for a run graded by the rule grader alone', () => {
    const t = new JudgeTally(0);
    t.add(item(1), grade(1, true, undefined));
    expect(t.result()).toBeUndefined();
  });
});

function* pairsOf(bothCorrect: number, onlyA: number, onlyB: number, bothWrong: number): Generator<[boolean, boolean]> {
  for (let i = 0; i < bothCorrect; i++) yield [true, true];
  for (let i = 0; i < onlyA; i++) yield [true, false];
  for (let i = 0; i < onlyB; i++) yield [false, true];
  for (let i = 0; i < bothWrong; i++) yield [false, false];
}
