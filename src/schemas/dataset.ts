import { z } from 'zod';

/** The one shape every accepted dataset format is normalised to. */
export const ItemSchema = z.strictObject({
  id: z.string().min(1),
  question: z.string().min(1),
  answer: z.string().min(1),
  aliases: z.array(z.string().min(1)).optional(),
  meta: z.record(z.string(), z.unknown()).optional(),
});
export type Item = z.infer<typeof ItemSchema>;

const nonEmpty = (what: string) =>
  z
    .string({ message: `${what} must be a string` })
    .trim()
    .min(1, `${what} is empty`);
const id = z.union([z.string().trim().min(1, 'id is empty'), z.number().int()]).optional();
const aliases = z.array(nonEmpty('alias')).optional();
const meta = z.record(z.string(), z.unknown()).optional();

// Record shapes. Fields a shape does not name are not refused: the reader moves them under `meta`
// before parsing (a near-miss of a named field is refused with its suggestion instead).

export const QaLineSchema = z.strictObject({ id, question: nonEmpty('question'), answer: nonEmpty('answer'), aliases, meta });

const Message = z.object({ role: z.enum(['system', 'user', 'assistant', 'tool', 'developer']), content: z.string() });
export const ChatLineSchema = z.strictObject({
  id,
  messages: z.array(Message).min(2, 'needs at least a user and an assistant message'),
  aliases,
  meta,
});

/** ShareGPT: `{"conversations":[{"from":"human","value":"..."},{"from":"gpt","value":"..."}]}`. */
const Turn = z.object({ from: z.enum(['system', 'human', 'user', 'gpt', 'assistant']), value: z.string() });
export const ShareGptLineSchema = z.strictObject({
  id,
  conversations: z.array(Turn).min(2, 'needs at least a human and a gpt turn'),
  aliases,
  meta,
});

export const PromptCompletionLineSchema = z.strictObject({ id, prompt: nonEmpty('prompt'), completion: nonEmpty('completion'), aliases, meta });

export const AlpacaLineSchema = z.strictObject({
  id,
  instruction: nonEmpty('instruction'),
  input: z.string().optional(),
  output: nonEmpty('output'),
  aliases,
  meta,
});

/** `columns` is not a record shape: it means the file's fields were named by a `columns:` mapping. */
export type DatasetFormat = 'qa' | 'chat' | 'sharegpt' | 'prompt-completion' | 'alpaca' | 'columns';

const column = (field: string) =>
  z
    .string()
    .trim()
    .min(1, 'name a column')
    .meta({ description: `the column (or top-level field) that holds the item's ${field}` });

/**
 * Which source columns hold the item's fields, for a dataset in none of the known shapes:
 * `{ question: query, answer: gold, id: qid, aliases: alt_answers }`. With a mapping the shape
 * is not detected; columns it does not name are kept under `meta`.
 */
export const ColumnsSchema = z
  .strictObject({
    question: column('question'),
    answer: column('reference answer'),
    id: column('id (default: a column named "id", else one derived from the question)').optional(),
    aliases: column('other accepted answers (a list; in CSV a JSON list or values separated by |)').optional(),
    meta: column('extra data, an object kept with the item').optional(),
  })
  .superRefine((c, ctx) => {
    const seen = new Map<string, string>();
    for (const [field, col] of Object.entries(c)) {
      if (col === undefined) continue;
      const other = seen.get(col);
      if (other) ctx.addIssue({ code: 'custom', path: [field], message: `names the same column "${col}" as ${other}: give each field its own column` });
      else seen.set(col, field);
    }
  })
  .meta({ description: 'where the item fields are in a dataset of another shape; any column not named here is kept under meta' });
export type Columns = z.infer<typeof ColumnsSchema>;
