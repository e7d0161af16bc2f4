/**
 * File types besides JSON Lines: each fixture reads to exactly the items of its JSON Lines twin
 * (test/fixtures/datasets/qa.jsonl), and a bad record in each is located (FILE:LINE, or
 * FILE: row N for Parquet and Arrow) with what to do. Parquet files and `save_to_disk` folders are
 * written at test time from the twins by the real `datasets` library in .venv (make setup).
 *
 * Parquet is read in a plain Node process (readInNode): hyparquet ships as ES modules only, which
 * Node loads with require() but jest's module sandbox does not (src/dataset/formats/esm.ts).
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { looksLikeDataset, readDataset, type ReadOptions } from '../src/dataset/read';
import { ColumnsSchema } from '../src/schemas/dataset';
import { formatProblem } from '../src/problems';

const ROOT = resolve(__dirname, '..');
const FIX = join(__dirname, 'fixtures', 'datasets');
const PY = join(ROOT, '.venv', 'bin', 'python');
const dir = mkdtempSync(join(tmpdir(), 'slearn-formats-'));
const at = (name: string) => join(dir, name);
const write = (name: string, text: string | Buffer) => {
  writeFileSync(at(name), text);
  return at(name);
};
/** Problems as the user sees them, the file shown by its name. */
const shown = async (file: string, opts: ReadOptions = {}) =>
  (await readDataset(file, { displayName: file.split('/').pop(), ...opts })).problems.map(formatProblem);

// Writes Parquet files and save_to_disk folders with the real `datasets` library (and pyarrow).
const WRITE_FIXTURES = `
import json, sys
import datasets, pyarrow.parquet as pq
out, fix = sys.argv[1], sys.argv[2]
qa = datasets.Dataset.from_json(fix + '/qa.jsonl')
qa.to_parquet(out + '/qa.parquet')
pq.write_table(qa.data.table, out + '/qa-zstd-rg1.parquet', row_group_size=1, compression='zstd')
qa.save_to_disk(out + '/qa-hf', num_shards=2)
datasets.DatasetDict({'train': qa, 'test': qa.select([0])}).save_to_disk(out + '/qa-dict')
datasets.DatasetDict({'validation': qa}).save_to_disk(out + '/no-train-dict')
datasets.Dataset.from_json(fix + '/mapped.jsonl').to_parquet(out + '/mapped.parquet')
bad = datasets.Dataset.from_list([
  {'id': 'b1', 'question': 'Q1', 'answer': 'A1'},
  {'id': 'b2', 'question': 'Q2', 'answer': 'A2'},
  {'id': 'b3', 'question': 'Q3', 'answer': None},
  {'id': 'b4', 'question': ' ', 'answer': 'A4'},
])
pq.write_table(bad.data.table, out + '/bad.parquet', row_group_size=2)
datasets.Dataset.from_list([{'question': 'Q1', 'anwser': 'A1'}]).to_parquet(out + '/typo.parquet')
datasets.Dataset.from_list([
  {'id': 'q1', 'question': 'Q1', 'answer': 'A1'},
  {'id': 'q2', 'question': 'Q2', 'answer': 'A2'},
  {'id': 'q1', 'question': 'Q3', 'answer': 'A3'},
]).save_to_disk(out + '/dup-hf', num_shards=2)
`;

let twin: Awaited<ReturnType<typeof readDataset>>;

type Read = Awaited<ReturnType<typeof readDataset>> & { shown: string[] };
/** What readDataset gives for each [file, options] in a plain Node process (all at once: one start-up). */
function readInNode(reads: [string, ReadOptions?][]): Read[] {
  const script = `
    const { readDataset } = require('./src/dataset/read.ts');
    const { formatProblem } = require('./src/problems.ts');
    (async () => {
      const out = [];
      for (const [file, opts] of JSON.parse(process.argv[1])) {
        const r = await readDataset(file, { displayName: file.split('/').pop(), ...opts });
        out.push({ ...r, shown: r.problems.map(formatProblem) });
      }
      process.stdout.write(JSON.stringify(out));
    })();`;
  const r = spawnSync(process.execPath, ['--require', 'tsx/cjs', '-e', script, JSON.stringify(reads)], { cwd: ROOT, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`reading in Node failed:\n${r.stderr}`);
  return JSON.parse(r.stdout);
}
const inNode = new Map<string, Read>();

beforeAll(async () => {
  if (!existsSync(PY)) throw new Error(`${PY} is missing: run \`make setup\` (the tests write Parquet and Arrow fixtures with the datasets library)`);
  const cache = join(dir, 'hf-cache');
  const py = spawnSync(PY, ['-c', WRITE_FIXTURES, dir, FIX], {
    encoding: 'utf8',
    env: { ...process.env, HF_HOME: cache, HF_DATASETS_CACHE: cache, HF_HUB_OFFLINE: '1', HF_DATASETS_DISABLE_PROGRESS_BARS: '1' },
  });
  if (py.status !== 0) throw new Error(`writing the fixtures failed:\n${py.stdout}${py.stderr}`);
  twin = await readDataset(join(FIX, 'qa.jsonl'));
  expect(twin.problems).toEqual([]);
  expect(twin.items).toHaveLength(4);
  copyFileSync(at('qa.parquet'), at('no-extension'));
  writeFileSync(at('fake.parquet'), 'not parquet at all');
  const reads: [string, ReadOptions?][] = [
    ['qa.parquet'],
    ['qa-zstd-rg1.parquet'],
    ['no-extension'],
    ['bad.parquet'],
    ['typo.parquet'],
    ['fake.parquet'],
    ['mapped.parquet', { columns: ColumnsSchema.parse({ question: 'query', answer: 'gold', id: 'qid', aliases: 'alt_answers' }) }],
  ];
  readInNode(reads.map(([f, o]) => [at(f), o])).forEach((r, i) => inNode.set(reads[i][0], r));
}, 120_000);

describe('every file type reads to the same items as its JSON Lines twin', () => {
  it.each([
    ['qa.csv (CRLF, a blank line, quotes, a quoted newline, | and JSON-list aliases)', join(FIX, 'qa.csv'), 'csv'],
    ['qa.tsv (quotes kept as text inside a field)', join(FIX, 'qa.tsv'), 'tsv'],
    ['qa.json (a pretty-printed array)', join(FIX, 'qa.json'), 'json'],
  ])('%s', async (_name, file, fileType) => {
    const r = await readDataset(file);
    expect(r.problems).toEqual([]);
    expect(r.fileType).toBe(fileType);
    expect(r.format).toBe('qa');
    expect(r.items).toEqual(twin.items);
  });

  it('ShareGPT (system prompt, several turns, user/assistant spellings)', async () => {
    const r = await readDataset(join(FIX, 'sharegpt.jsonl'));
    expect(r.problems).toEqual([]);
    expect(r.format).toBe('sharegpt');
    expect(r.items).toEqual(twin.items);
  });

  it('Parquet written by datasets (snappy), and by pyarrow with zstd and one row per row group', () => {
    for (const name of ['qa.parquet', 'qa-zstd-rg1.parquet']) {
      const r = inNode.get(name)!;
      expect({ name, problems: r.problems }).toEqual({ name, problems: [] });
      expect(r.fileType).toBe('parquet');
      expect(r.items).toEqual(twin.items);
    }
  });

  it('a save_to_disk folder in two Arrow shards', async () => {
    const r = await readDataset(at('qa-hf'));
    expect(r.problems).toEqual([]);
    expect(r.fileType).toBe('arrow');
    expect(r.items).toEqual(twin.items);
  });

  it('a DatasetDict folder reads its train split, and says so; a split folder reads as given', async () => {
    const r = await readDataset(at('qa-dict'), { displayName: 'qa-dict' });
    expect(r.problems).toEqual([]);
    expect(r.items).toEqual(twin.items);
    expect(r.notices).toEqual([
      'qa-dict: a DatasetDict with the splits train, test: reading "train" (name qa-dict/SPLIT to read another)',
      'qa-dict/train: 2 columns not used by slearn are kept under meta: category, difficulty',
    ]);
    const test = await readDataset(join(at('qa-dict'), 'test'));
    expect(test.items).toEqual(twin.items.slice(0, 1));
  });

  it('a .json file holding JSON Lines, and a file without an extension, are told by their content', async () => {
    const jsonl = await readDataset(write('lines.json', `${JSON.stringify({ question: 'Q', answer: 'A' })}\n`));
    expect(jsonl.fileType).toBe('jsonl');
    expect(jsonl.items).toHaveLength(1);
    const parquet = inNode.get('no-extension')!;
    expect(parquet.fileType).toBe('parquet');
    expect(parquet.items).toEqual(twin.items);
  });
});

describe('a bad record in each file type is located, with what to do', () => {
  it('CSV: FILE:LINE of the row where it starts; wrong field counts; quoting errors stop the read', async () => {
    const f = write('bad.csv', 'question,answer\n"Which\nsoil?",loam\nWhich pest?,\n,borer\nToo,many,fields\n"unclosed,x\n');
    expect(await shown(f)).toEqual([
      'bad.csv:4: answer: answer is empty (got string ""): change the value',
      'bad.csv:5: question: question is empty (got string ""): change the value',
      'bad.csv:6: row has 3 fields but the header has 2: check the commas and the quoting of this row',
      'bad.csv:7: a quoted field is never closed: add the closing quote (the rest of the file was not read)',
    ]);
  });

  it('CSV: a header problem is reported once, on line 1, not on every row', async () => {
    expect(await shown(write('typo.csv', 'question,anwser\nQ1,A1\nQ2,A2\n'))).toEqual(['typo.csv:1: anwser: unknown column: did you mean "answer"? rename it']);
    expect(await shown(write('dup-col.csv', 'question,answer,answer\nQ1,A1,A2\n'))).toEqual([
      'dup-col.csv:1: answer: this column name appears twice in the header: rename one',
    ]);
    expect(await shown(write('nocols.csv', 'q,a\nQ1,A1\n'))).toEqual([
      expect.stringMatching(/^nocols\.csv:1: unknown format: use .* \(the columns are: q, a\)$/),
    ]);
    expect(await shown(write('header-only.csv', 'question,answer\n'))).toEqual(['header-only.csv: no rows below the header: add one row per item']);
  });

  it('CSV: empty columns a spreadsheet adds at the end are ignored, unless a row has a value there', async () => {
    const r = await readDataset(write('trailing.csv', 'question,answer,,\nQ1,A1,,\nQ2,A2,,oops\n'), { displayName: 'trailing.csv' });
    expect(r.problems.map(formatProblem)).toEqual([
      'trailing.csv:3: column 4 has a value but no name in the header: give the column a name, or remove the value',
    ]);
    expect(r.items).toEqual([{ id: expect.any(String), question: 'Q1', answer: 'A1' }]);
  });

  it('a field or column named __proto__ is kept as data', async () => {
    const csv = await readDataset(write('proto.csv', 'question,answer,__proto__\nQ1,A1,x\n'));
    expect(Object.hasOwn(csv.items[0].meta!, '__proto__')).toBe(true);
    const jsonl = await readDataset(write('proto.jsonl', '{"question":"Q1","answer":"A1","__proto__":{"polluted":true}}\n'));
    expect(Object.getOwnPropertyDescriptor(jsonl.items[0].meta, '__proto__')?.value).toEqual({ polluted: true });
    expect(({} as any).polluted).toBeUndefined();
  });

  it('CSV: aliases that are not a JSON list, and bytes that are not UTF-8, on their line', async () => {
    const f = write(
      'bad-cells.csv',
      Buffer.concat([Buffer.from('question,answer,aliases\nQ1,A1,"[""x"", 1]"\n'), Buffer.from('Caf\xe9?,A2,\n', 'latin1'), Buffer.from('Q3,A3,a|b\n')]),
    );
    const r = await readDataset(f, { displayName: 'bad-cells.csv' });
    expect(r.problems.map(formatProblem)).toEqual([
      'bad-cells.csv:2: aliases: not a JSON list of strings: write the aliases as ["N", "nitrogen"], or separate them with | (N|nitrogen)',
      'bad-cells.csv:3: not valid UTF-8: re-save the file as UTF-8',
    ]);
    expect(r.items).toEqual([{ id: expect.any(String), question: 'Q3', answer: 'A3', aliases: ['a', 'b'] }]);
  });

  it('TSV: FILE:LINE of the row', async () => {
    expect(await shown(write('bad.tsv', 'question\tanswer\nQ1\tA1\nQ2\n'))).toEqual([
      'bad.tsv:3: row has 1 fields but the header has 2: check the tabs and the quoting of this row',
    ]);
  });

  it('JSON array: FILE:LINE where the element starts; a syntax error stops the read', async () => {
    const f = write(
      'bad.json',
      '[\n  {"question": "Q1", "answer": "A1"},\n  {\n    "question": "Q2"\n  },\n  ["Q3", "A3"],\n  {"question": "Q4", "answer": 4},\n  {"question": "Q5" "answer": "A5"}\n]\n',
    );
    expect(await shown(f)).toEqual([
      'bad.json:3: answer: missing (required): add "answer" (a string)',
      'bad.json:6: not a JSON object (got an array): write each element as an object such as {"question": "...", "answer": "..."}',
      'bad.json:7: answer: answer must be a string (got number 4): change the value',
      expect.stringMatching(/^bad\.json:8: invalid JSON \(.*\): fix the file here; the rest of it was not read$/),
    ]);
  });

  it('JSON: not an array, cut short, empty', async () => {
    expect(await shown(write('obj.json', '"just a string"\n'))).toEqual([expect.stringMatching(/^obj\.json:1: not a JSON array .*write the records as \[/)]);
    expect(await shown(write('cut.json', '[\n{"question": "Q1", "answer": "A1"},\n{"question": "Q2", "ans'))).toEqual([
      expect.stringMatching(/^cut\.json:3: the file ends inside the array.*end the array with \]/),
    ]);
    expect(await shown(write('empty.json', '[]'))).toEqual(['empty.json: no records: write them as a JSON array [{"question": "...", "answer": "..."}, ...]']);
  });

  it('Parquet: FILE: row N (rows counted from 1 across row groups)', () => {
    expect(inNode.get('bad.parquet')!.shown).toEqual([
      'bad.parquet: row 3: answer: missing (required): add "answer" (a string)',
      'bad.parquet: row 4: question: question is empty (got string " "): change the value',
    ]);
    expect(inNode.get('bad.parquet')!.items.map((i) => i.id)).toEqual(['b1', 'b2']);
    expect(inNode.get('typo.parquet')!.shown).toEqual(['typo.parquet: anwser: unknown column: did you mean "answer"? rename it']);
    expect(inNode.get('fake.parquet')!.shown).toEqual([expect.stringMatching(/^fake\.parquet: not a readable Parquet file \(.*\): check that it is Parquet/)]);
  });

  it('Arrow (save_to_disk): FILE: row N across shards', async () => {
    expect(await shown(at('dup-hf'))).toEqual(['dup-hf: row 3: id: duplicate id "q1" (first on row 1): give each item its own id']);
    expect(await shown(at('no-train-dict'))).toEqual([
      'no-train-dict: a DatasetDict with the splits validation and no "train": give the split folder to read, e.g. no-train-dict/validation',
    ]);
    mkdirSync(at('plain-folder'), { recursive: true });
    expect(await shown(at('plain-folder'))).toEqual([expect.stringMatching(/^plain-folder: a folder, not a dataset: give a dataset file/)]);
  });

  it('files slearn cannot read are refused whole, saying what to do', async () => {
    expect(await shown(write('data.jsonl.gz', Buffer.from([0x1f, 0x8b, 0x08])))).toEqual([
      'data.jsonl.gz: a compressed file: decompress it first and give the file it holds',
    ]);
    expect(await shown(write('notes.txt', 'question;answer\n'))).toEqual([
      expect.stringMatching(/^notes\.txt: cannot tell the file type .*give it the extension of its format/),
    ]);
  });
});

describe('a columns: mapping names the fields of any other shape', () => {
  const columns = ColumnsSchema.parse({ question: 'query', answer: 'gold', id: 'qid', aliases: 'alt_answers' });

  it('reads JSON Lines and Parquet through it to the twin items; unmapped columns go to meta', async () => {
    for (const [file, r] of [
      ['mapped.jsonl', await readDataset(join(FIX, 'mapped.jsonl'), { columns })],
      ['mapped.parquet', inNode.get('mapped.parquet')!],
    ] as const) {
      expect({ file, problems: r.problems }).toEqual({ file, problems: [] });
      expect(r.format).toBe('columns');
      expect(r.items).toEqual(twin.items);
    }
  });

  it('CSV through a mapping; a missing mapped column is reported once, with a suggestion', async () => {
    const ok = await readDataset(write('mapped.csv', 'qid,query,gold,extra\nx1,Which soil?,loam,e\n'), { columns });
    expect(ok.problems).toEqual([]);
    expect(ok.items).toEqual([{ id: 'x1', question: 'Which soil?', answer: 'loam', meta: { extra: 'e' } }]);
    expect(ok.notices).toEqual([
      `${at('mapped.csv')}: columns.aliases names "alt_answers", which is not a column (the columns are: qid, query, gold, extra): no aliases are read`,
      `${at('mapped.csv')}: 1 column not used by slearn is kept under meta: extra`,
    ]);
    expect(await shown(write('mapped-typo.csv', 'qid,query,glod\nx1,Q1,A1\nx2,Q2,A2\n'), { columns })).toEqual([
      'mapped-typo.csv:1: gold: no such column, named by columns.answer (did you mean "glod"?) (the columns are: qid, query, glod): check the columns: mapping',
    ]);
  });

  it('JSON Lines through a mapping: problems name the source field', async () => {
    const f = write('mapped-bad.jsonl', lines({ query: 'Q1', gold: '' }, { query: 'Q2' }, { query: 'Q3', glod: 'A3' }));
    expect(await shown(f, { columns })).toEqual([
      'mapped-bad.jsonl:1: gold: answer is empty (got string ""): change the value',
      'mapped-bad.jsonl:2: gold: missing (required): add "gold" (a string)',
      'mapped-bad.jsonl:3: glod: unknown field: did you mean "gold" (named in columns:)? rename it, or change the mapping',
    ]);
  });

  it('ColumnsSchema: question and answer required, one column per field, nothing else', () => {
    expect(ColumnsSchema.safeParse({ question: 'q' }).success).toBe(false);
    expect(ColumnsSchema.safeParse({ question: 'q', answer: 'q' }).error?.issues[0]).toMatchObject({
      path: ['answer'],
      message: expect.stringMatching(/same column "q" as question/),
    });
    expect(ColumnsSchema.safeParse({ question: 'q', answer: 'a', text: 't' }).success).toBe(false);
    expect(ColumnsSchema.parse({ question: 'q', answer: 'a', meta: 'm' })).toEqual({ question: 'q', answer: 'a', meta: 'm' });
  });
});

describe('looksLikeDataset tells a dataset from a config', () => {
  it.each([
    ['a .jsonl file, even one not there yet', () => join(dir, 'missing.jsonl'), true],
    ['a .csv file', () => join(FIX, 'qa.csv'), true],
    ['a Parquet file', () => at('qa.parquet'), true],
    ['Parquet bytes without an extension', () => at('no-extension'), true],
    ['a save_to_disk folder', () => at('qa-hf'), true],
    ['a DatasetDict folder', () => at('qa-dict'), true],
    ['a JSON array', () => join(FIX, 'qa.json'), true],
    ['JSON Lines in a .json file', () => at('lines.json'), true],
    ['a chat line with a model field', () => write('chat.json', lines({ messages: [], model: 'gpt-4', dataset: 'x' })), true],
    ['a YAML config', () => write('slearn.yaml', 'name: x\ndataset: data.jsonl\n'), false],
    ['a pretty-printed JSON config', () => write('slearn.json', '{\n  "name": "x",\n  "dataset": "d.jsonl",\n  "model": {}\n}\n'), false],
    ['a one-line JSON config', () => write('cfg.json', '{"name":"x","dataset":"d.jsonl","model":{"baseUrl":"http://x/v1","name":"m"}}\n'), false],
    ['a YAML config without an extension', () => write('config', 'name: x\n'), false],
    ['a folder that is not a dataset', () => at('plain-folder'), false],
  ])('%s', (_name, path, expected) => {
    mkdirSync(at('plain-folder'), { recursive: true });
    expect(looksLikeDataset(path())).toBe(expected);
  });
});

function lines(...records: unknown[]): string {
  return records.map((r) => JSON.stringify(r)).join('\n') + '\n';
}
