import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readDataset, scanDataset } from '../src/dataset/read';
import { editDistance, nearMiss } from '../src/dataset/records';
import { formatProblem } from '../src/problems';

const dir = mkdtempSync(join(tmpdir(), 'slearn-dataset-'));
const file = (name: string, text: string | Buffer) => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};
const lines = (...records: unknown[]) => records.map((r) => (typeof r === 'string' ? r : JSON.stringify(r))).join('\n') + '\n';

describe('record shapes', () => {
  it('normalises all five shapes to {id, question, answer}', async () => {
    const cases: [string, string][] = [
      ['qa', '{"id":"a","question":"Q?","answer":"A","aliases":["aa"]}'],
      ['chat', '{"messages":[{"role":"system","content":"s"},{"role":"user","content":"Q?"},{"role":"assistant","content":"A"}]}'],
      ['sharegpt', '{"conversations":[{"from":"system","value":"s"},{"from":"human","value":"Q?"},{"from":"gpt","value":"A"}]}'],
      ['prompt-completion', '{"prompt":"Q?","completion":"A"}'],
      ['alpaca', '{"instruction":"Q?","input":"","output":"A"}'],
    ];
    for (const [format, line] of cases) {
      const r = await readDataset(file(`${format}.jsonl`, line + '\n'));
      expect({ format, problems: r.problems }).toEqual({ format, problems: [] });
      expect(r.format).toBe(format);
      expect(r.fileType).toBe('jsonl');
      expect(r.items[0]).toMatchObject({ question: 'Q?', answer: 'A' });
      expect(r.items[0].id).toBeTruthy();
    }
  });

  it('ShareGPT: the question is the last human turn before the final gpt turn', async () => {
    const r = await readDataset(
      file(
        'sharegpt-multi.jsonl',
        lines({
          conversations: [
            { from: 'human', value: 'Hi' },
            { from: 'gpt', value: 'Hello' },
            { from: 'user', value: 'Which soil?' },
            { from: 'assistant', value: 'loam' },
          ],
        }),
      ),
    );
    expect(r.problems).toEqual([]);
    expect(r.items[0]).toMatchObject({ question: 'Which soil?', answer: 'loam' });
  });

  it('ShareGPT problems are located like the chat format, saying what to do', async () => {
    const r = await readDataset(
      file(
        'sharegpt-bad.jsonl',
        lines(
          {
            conversations: [
              { from: 'gpt', value: 'Hello' },
              { from: 'human', value: 'Which soil?' },
            ],
          },
          {
            conversations: [
              { from: 'human', value: 'Which soil?' },
              { from: 'bot', value: 'loam' },
            ],
          },
          {
            conversations: [
              { from: 'human', value: 'Which soil?' },
              { from: 'gpt', value: ' ' },
            ],
          },
        ),
      ),
      { displayName: 'sg.jsonl' },
    );
    expect(r.problems.map(formatProblem)).toEqual([
      'sg.jsonl:1: conversations: the last turn is from "human": end with the "gpt" turn that holds the reference answer',
      expect.stringMatching(
        /^sg\.jsonl:2: conversations\[1\]\.from: must be one of "system", "human", "user", "gpt", "assistant" \(got string "bot"\): choose one$/,
      ),
      'sg.jsonl:3: conversations: the gpt turn is empty: write the reference answer',
    ]);
  });

  it('accepts a BOM, CRLF line ends and blank lines as if clean', async () => {
    const clean = await readDataset(file('clean.jsonl', '{"question":"Q1","answer":"A1"}\n{"question":"Q2","answer":"A2"}\n'));
    const messy = await readDataset(
      file(
        'messy.jsonl',
        Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"question":"Q1","answer":"A1"}\r\n\r\n  \r\n{"question":"Q2","answer":"A2"}')]),
      ),
    );
    expect(messy.problems).toEqual([]);
    expect(messy.items).toEqual(clean.items);
  });

  it('gives content-derived ids that do not move when lines are added', async () => {
    const a = (await readDataset(file('a.jsonl', '{"question":"Q1","answer":"A1"}\n'))).items[0].id;
    const b = (await readDataset(file('b.jsonl', '{"question":"Q0","answer":"A0"}\n{"question":"Q1","answer":"A1"}\n'))).items[1].id;
    expect(a).toBe(b);
    expect(a).toMatch(/^q-[0-9a-f]{12}$/);
  });

  it('reports every bad line with its line number and field', async () => {
    const r = await readDataset(
      file(
        'bad.jsonl',
        ['{"question":"ok","answer":"ok"}', '{"question":"","answer":"x"}', 'not json', '{"question":"q","answer":7}', '{"prompt":"p","completion":"c"}'].join(
          '\n',
        ),
      ),
      { displayName: 'bad.jsonl' },
    );
    expect(r.problems.map((p) => [p.line, p.field])).toEqual([
      [2, 'question'],
      [3, undefined],
      [4, 'answer'],
      [5, undefined],
    ]);
    expect(r.problems[1].message).toMatch(/invalid JSON/);
    expect(r.problems[3].message).toMatch(/mixed formats.*line 1/);
    expect(r.count).toBe(1);
  });

  it('keeps at most maxProblems problems and counts the rest in one last problem', async () => {
    const r = await readDataset(file('many-bad.jsonl', 'x\n'.repeat(30)), { maxProblems: 5, displayName: 'm.jsonl' });
    expect(r.problems).toHaveLength(6);
    expect(formatProblem(r.problems[5])).toBe('m.jsonl: 25 more problems not listed: fix the ones above and check the file again');
  });
});

describe('unknown fields are kept under meta; near-misses are refused with a suggestion', () => {
  it('keeps unknown top-level fields under meta, merged with an explicit meta, with one notice per file', async () => {
    const r = await readDataset(
      file(
        'extra.jsonl',
        lines(
          { question: 'Q1', answer: 'A1', category: 'geo', source: 'atlas' },
          { question: 'Q2', answer: 'A2', category: 'bio', difficulty: 3, meta: { reviewer: 'ann', category: 'biology' } },
          { question: 'Q3', answer: 'A3' },
        ),
      ),
      { displayName: 'train.jsonl' },
    );
    expect(r.problems).toEqual([]);
    expect(r.items.map((i) => i.meta)).toEqual([{ category: 'geo', source: 'atlas' }, { category: 'biology', difficulty: 3, reviewer: 'ann' }, undefined]);
    expect(r.notices).toEqual(['train.jsonl: 3 fields not used by slearn are kept under meta: category, source, difficulty']);
  });

  it('keeps them for every shape (chat, alpaca), with the singular notice for one field', async () => {
    const r = await readDataset(
      file(
        'chat-extra.jsonl',
        lines({
          messages: [
            { role: 'user', content: 'Q' },
            { role: 'assistant', content: 'A' },
          ],
          model: 'gpt-4',
        }),
      ),
      { displayName: 'c.jsonl' },
    );
    expect(r.problems).toEqual([]);
    expect(r.items[0].meta).toEqual({ model: 'gpt-4' });
    expect(r.notices).toEqual(['c.jsonl: 1 field not used by slearn is kept under meta: model']);
    const alpaca = await readDataset(file('alpaca-extra.jsonl', lines({ instruction: 'Q', input: 'ctx', output: 'A', text: 'Q ctx A' })));
    expect(alpaca.problems).toEqual([]);
    expect(alpaca.items[0]).toMatchObject({ question: 'Q\n\nctx', answer: 'A', meta: { text: 'Q ctx A' } });
  });

  it('refuses a misspelt known field with "did you mean", and not also as missing', async () => {
    const r = await readDataset(
      file(
        'typo.jsonl',
        lines(
          { question: 'Which soil?', anwser: 'loam' },
          { qeustion: 'Which soil?', answer: 'loam' },
          { question: 'Which soil?', answer: 'loam', alias: ['clay loam'] },
          { question: 'Which soil?', answers: ['loam'] },
          { Question: 'Which soil?', Answer: 'loam' },
        ),
      ),
      { displayName: 'data.jsonl' },
    );
    expect(r.problems.map(formatProblem)).toEqual([
      'data.jsonl:1: anwser: unknown field: did you mean "answer"? rename it',
      'data.jsonl:2: qeustion: unknown field: did you mean "question"? rename it',
      'data.jsonl:3: alias: unknown field: did you mean "aliases"? rename it',
      'data.jsonl:4: answers: unknown field: did you mean "answer"? rename it',
      'data.jsonl:5: Question: unknown field: did you mean "question"? rename it',
      'data.jsonl:5: Answer: unknown field: did you mean "answer"? rename it',
    ]);
    expect(r.count).toBe(0);
  });

  it('suggests nothing when the intended field is there, or the name is short (idx is not id)', async () => {
    const r = await readDataset(file('not-typos.jsonl', lines({ question: 'Q', answer: 'A', answers: ['A', 'a'], idx: 7, ids: [1] })));
    expect(r.problems).toEqual([]);
    expect(r.items[0].meta).toEqual({ answers: ['A', 'a'], idx: 7, ids: [1] });
  });

  it('a record of no known shape is refused, pointing at columns:', async () => {
    const r = await readDataset(file('unknown.jsonl', lines({ q: 'Which soil?', a: 'loam' })), { displayName: 'u.jsonl' });
    expect(r.problems.map(formatProblem)).toEqual([expect.stringMatching(/^u\.jsonl:1: unknown format: use \{"question","answer"\}.*`columns:`/)]);
  });

  it('edit distance counts a transposition as one edit', () => {
    expect(editDistance('anwser', 'answer')).toBe(1);
    expect(editDistance('qeustion', 'question')).toBe(1);
    expect(editDistance('category', 'answer')).toBeGreaterThan(2);
    expect(nearMiss('anwser', ['question', 'answer'], { question: 'q' })).toBe('answer');
    expect(nearMiss('anwser', ['question', 'answer'], { question: 'q', answer: 'a' })).toBeUndefined();
  });
});

describe('scanDataset streams', () => {
  it('awaits onItem before reading on (backpressure), in file order, with where each item is', async () => {
    const f = file('order.jsonl', lines(...Array.from({ length: 50 }, (_, i) => ({ id: `i${i}`, question: `Q${i}`, answer: 'A' }))));
    const seen: string[] = [];
    let inFlight = 0;
    const r = await scanDataset(f, async (item, where) => {
      inFlight++;
      expect(inFlight).toBe(1);
      await new Promise((res) => setImmediate(res));
      seen.push(`${item.id}@${where.line}`);
      inFlight--;
    });
    expect(r).toEqual({ format: 'qa', fileType: 'jsonl', count: 50, problems: [], notices: [] });
    expect(seen).toEqual(Array.from({ length: 50 }, (_, i) => `i${i}@${i + 1}`));
  });

  it('a file that is not there is one problem, with no line', async () => {
    const r = await readDataset(join(dir, 'nope.jsonl'), { displayName: 'nope.jsonl' });
    expect(r.problems.map(formatProblem)).toEqual(['nope.jsonl: file not found: check the path (relative paths are relative to the config file)']);
  });
});
