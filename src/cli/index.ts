import { Command } from 'commander';
import { EXIT, reportFailure } from './exit';
import { modelsCommand } from './models';
import { addRunCommands } from './runs';
import { scheduleCommand } from './schedule';
import { addServiceCommands } from './services';
import { addValidateCommands } from './validate';

/**
 * The `slearn` command, one file per family of subcommands: validate.ts (validate, schema), runs.ts
 * (run, status, watch, list, cancel, audit, report, resume), schedule.ts, models.ts, and
 * services.ts (server, worker, codec-server, demo). How it ends is exit.ts's.
 */
export function program(): Command {
  const p = new Command('slearn')
    .description('Adapt an LLM to a domain by self-learning (SLearnLLM), as a durable Temporal workflow')
    .exitOverride()
    .showHelpAfterError();
  addServiceCommands(p, ['server', 'worker']);
  addValidateCommands(p);
  addRunCommands(p);
  p.addCommand(scheduleCommand());
  p.addCommand(modelsCommand());
  addServiceCommands(p, ['codec-server', 'demo']);
  return p;
}

/** Runs `slearn ARGV` and returns its exit code (0 success, 1 invalid input or a failed run, 2 wrong usage). */
export async function main(argv: string[]): Promise<number> {
  try {
    await program().parseAsync(argv);
    return EXIT.ok;
  } catch (e) {
    return reportFailure(e);
  }
}
