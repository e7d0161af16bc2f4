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

const nonEmpty = (what: string) => z.string({ message: `${what} must be a string` }).trim().min(1, `${what} is empty`);
const id = z.union([z.string().trim().min(1, 'id is empty'), z.number().int()]).optional();
const meta = z.record(z.string(), z.unknown()).optional();

export const QaLineSchema = z.strictObject({
  id,
  question: nonEmpty('question'),
  answer: nonEmpty('answer'),
  aliases: z.array(nonEmpty('alias')).optional(),
  meta,
});

const Message = z.object({ role: z.enum(['system', 'user', 'assistant', 'tool', 'developer']), content: z.string() });
export const ChatLineSchema = z.strictObject({
  id,
  messages: z.array(Message).min(2, 'needs at least a user and an assistant message'),
  aliases: z.array(nonEmpty('alias')).optional(),
  meta,
});

export const PromptCompletionLineSchema = z.strictObject({
  id,
  prompt: nonEmpty('prompt'),
  completion: nonEmpty('completion'),
  aliases: z.array(nonEmpty('alias')).optional(),
  meta,
});

export const AlpacaLineSchema = z.strictObject({
  id,
  instruction: nonEmpty('instruction'),
  input: z.string().optional(),
  output: nonEmpty('output'),
  aliases: z.array(nonEmpty('alias')).optional(),
  meta,
});

export type DatasetFormat = 'qa' | 'chat' | 'prompt-completion' | 'alpaca';
