import type { Command } from 'commander';
import { validateAll } from '../config';
import { looksLikeDataset, readDataset } from '../dataset/read';
import { InvalidInput } from '../errors';
import { UsageError } from './exit';
import { printJson } from './output';

/** `slearn validate FILE` and `slearn schema`: what a config or a dataset must look like, checked before anything runs. */
export function addValidateCommands(p: Command): void {
  p.command('validate')
    .description('check a config and its datasets, or a dataset file: every problem as FILE:LINE: field: message')
    .argument('[file]', 'a config (YAML or JSON) or a dataset (recognised by its content or extension)')
    .option('--dataset <file>', 'check FILE as a dataset, whatever it looks like')
    .action(async (file: string | undefined, o) => {
      if (!file && !o.dataset) throw new UsageError('give a CONFIG or a dataset FILE');
      const dataset: string | undefined = o.dataset ?? (file && looksLikeDataset(file) ? file : undefined);
      if (dataset) {
        const r = await readDataset(dataset);
        if (r.problems.length) throw new InvalidInput(r.problems);
        for (const n of r.notices) console.error(n);
        console.log(`${dataset}: ${r.count} items, ${r.format ?? r.fileType} format: OK`);
        if (!file || file === dataset) return;
      }
      const v = await validateAll(file!);
      for (const n of v.notices) console.error(n);
      console.log(
        `${file}: OK (${v.items} items${v.evalItems !== undefined ? `, ${v.evalItems} evaluation items` : ', a held-out split for evaluation'}; artifacts in ${v.store})`,
      );
    });

  p.command('schema')
    .description("print the config's JSON Schema (generated from the zod schema; point your editor at it)")
    .action(async () => {
      const { configJsonSchema } = await import('../schemas/generated');
      printJson(configJsonSchema());
    });
}
