/**
 * How `slearn` ends, in one place: 0 success, 1 invalid input or a failed run, 2 wrong usage. Every
 * subcommand throws one of these (or lets an InvalidInput through); `main` turns it into the code.
 */
import { CommanderError } from 'commander';
import { InvalidInput } from '../errors';
import { formatProblem } from '../problems';

export const EXIT = { ok: 0, failed: 1, usage: 2 } as const;
export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** Ends the command with `code`, printing `message` (when there is one) as it is. */
export class Exit extends Error {
  constructor(
    readonly code: ExitCode,
    message = '',
  ) {
    super(message);
    this.name = 'Exit';
  }
}

/** Wrong usage (a missing or contradictory option): `error: MESSAGE` and exit 2, as commander does for its own checks. */
export class UsageError extends Exit {
  constructor(message: string) {
    super(EXIT.usage, `error: ${message}`);
    this.name = 'UsageError';
  }
}

/** Prints what the user needs from `e` on stderr and returns the exit code. */
export function reportFailure(e: unknown, stderr: (line: string) => void = (l) => console.error(l)): ExitCode {
  // commander has printed its own message (and the help after it).
  if (e instanceof CommanderError) return e.exitCode === 0 ? EXIT.ok : EXIT.usage;
  if (e instanceof InvalidInput) {
    if (e.problems.length) for (const p of e.problems) stderr(formatProblem(p));
    else stderr(e.message);
    return EXIT.failed;
  }
  if (e instanceof Exit) {
    if (e.message) stderr(e.message);
    return e.code;
  }
  stderr(`error: ${(e as Error)?.message ?? String(e)}`);
  return EXIT.failed;
}
