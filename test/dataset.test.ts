import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readDataset } from '../src/dataset/read';
import { tempDir } from './support/stack';

const dir = tempDir();
const file = (name: string, text: string | Buffer) => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};

describe('dataset formats', () => {
  it('normalises all four formats to {id, question, answer}', () => {
    const cases: [string, string][] = [
      ['qa', '{"id":"a","question":"Q?","answer":"A","aliases":["aa"]}'],
      ['chat', '{"messages":[{"role":"system","content":"s"},{"role":"user","content":"Q?"},{"role":"assistant","content":"A"}]}'],
      ['prompt-completion', '{"prompt":"Q?","completion":"A"}'],
      ['alpaca', '{"instruction":"Q?","input":"","output":"A"}'],
    ];
    for (const [format, line] of cases) {
      const r = readDataset(file(`${format}.jsonl`, line + '\n'));
      expect(r.problems).toEqual([]);
      expect(r.format).toBe(format);
      expect(r.items[0]).toMatchObject({ question: 'Q?', answer: 'A' });
      expect(r.items[0].id).toBeTruthy();
    }
  });
  it('accepts a BOM, CRLF line ends and blank lines as if clean', () => {
    const clean = readDataset(file('clean.jsonl', '{"question":"Q1","answer":"A1"}\n{"question":"Q2","answer":"A2"}\n'));
    const messy = readDataset(file('messy.jsonl', Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"question":"Q1","answer":"A1"}\r\n\r\n  \r\n{"question":"Q2","answer":"A2"}\r\n')])));
    expect(messy.problems).toEqual([]);
    expect(messy.items).toEqual(clean.items);
  });
  it('gives content-derived ids that do not move when lines are added', () => {
    const a = readDataset(file('a.jsonl', '{"question":"Q1","answer":"A1"}\n')).items[0].id;
    const b = readDataset(file('b.jsonl', '{"question":"Q0","answer":"A0"}\n{"question":"Q1","answer":"A1"}\n')).items[1].id;
    expect(a).toBe(b);
  });
  it('reports every bad line with its line number and field', () => {
    const r = readDataset(
      file('bad.jsonl', ['{"question":"ok","answer":"ok"}', '{"question":"","answer":"x"}', 'not json', '{"question":"q","answer":7}', '{"prompt":"p","completion":"c"}'].join('\n')),
      'bad.jsonl',
    );
    expect(r.problems.map((p) => [p.line, p.field])).toEqual([
      [2, 'question'],
      [3, undefined],
      [4, 'answer'],
      [5, undefined],
    ]);
    expect(r.problems[1].message).toMatch(/invalid JSON/);
    expect(r.problems[3].message).toMatch(/mixed formats.*line 1/);
  });
});
