import { agreement, countPair, describeAgreement, disagreements, type AgreementTable } from '../metrics';
import type { Item } from '../schemas/dataset';
import type { ItemGrade } from '../schemas/results';
import type { Disagreement, JudgeAgreement } from '../schemas/run';

/** Examples travel in the workflow's history: long texts are cut, the full item is in the decisions file. */
const clip = (s: string, n = 300) => (s.length > n ? `${s.slice(0, n - 1)}…` : s);

/**
 * The judge against the rule grader over a run's greedy answers, one item at a time: the 2×2
 * table, and a seeded handful of each kind of disagreement (memory stays a few items).
 */
export class JudgeTally {
  private table: AgreementTable = { bothCorrect: 0, onlyA: 0, onlyB: 0, bothWrong: 0 };
  private picks: { onlyA: Disagreement[]; onlyB: Disagreement[] } = { onlyA: [], onlyB: [] };

  constructor(
    private readonly seed: number,
    private readonly perKind = 3,
  ) {}

  add(item: Item, grade: ItemGrade): void {
    const g = grade.greedy;
    if (grade.status !== 'graded' || g?.rule === undefined) return;
    const [judge, rule] = [g.correct, g.rule];
    countPair(this.table, judge, rule);
    if (judge === rule) return;
    const d: Disagreement = {
      id: item.id,
      question: clip(item.question),
      reference: clip(item.answer),
      answer: clip(g.answer),
      judge,
      rationale: clip(g.rationale),
    };
    this.picks = disagreements(
      [...this.picks.onlyA, ...this.picks.onlyB, d],
      (x) => [x.judge, !x.judge] as const,
      (x) => x.id,
      {
        perKind: this.perKind,
        seed: this.seed,
      },
    );
  }

  /** Undefined when no answer carried both verdicts (a run graded by the rule grader alone). */
  result(): JudgeAgreement | undefined {
    const a = agreement(this.table);
    if (!a.items) return undefined;
    return { ...a, words: describeAgreement(a), examples: { judgeOnly: this.picks.onlyA, ruleOnly: this.picks.onlyB } };
  }
}
