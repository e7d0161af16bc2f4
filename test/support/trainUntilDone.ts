// A worker process for the lease test: runs the train step (as an activity would), retrying on
// TrainerBusy as Temporal would, and prints {adapter, busy} as its last line.
import { readFileSync } from 'node:fs';
import { TrainerBusy } from '../../src/errors';
import { train } from '../../src/pipeline/train';
import { stepEnv } from './env';

async function main() {
  const { ctx, trainSet } = JSON.parse(readFileSync(process.argv[2], 'utf8'));
  let busy = 0;
  for (;;) {
    try {
      const r = await train(stepEnv({ label: `pid-${process.pid}` }), { ctx, trainSet });
      console.log(JSON.stringify({ adapter: r.adapter, busy }));
      return;
    } catch (e) {
      if (!(e instanceof TrainerBusy)) throw e;
      busy++;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}
main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
