import { answerShard, gradeShard } from './shards';
import { evaluate } from './evaluate';
import { filter } from './filter';
import { prepare } from './prepare';
import { report } from './report';
import { makeTrain, type TrainDeps } from './train';

/** All activities, with the trainer command injected by the worker that hosts them. */
export function createActivities(deps: TrainDeps) {
  return { prepare, answerShard, gradeShard, filter, train: makeTrain(deps), evaluate, report };
}

export type Activities = ReturnType<typeof createActivities>;
