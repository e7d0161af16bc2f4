/**
 * The held-out split without an eval file: seeded, the configured share, at least minEval items,
 * and stable as a dataset grows: an item trained on in one run is never held out in a later one
 * (that would evaluate the model in service, and adapters chained from it, on what they learnt).
 */
import { draw, splitThreshold } from '../src/pipeline/prepare';

const ids = (n: number, from = 0) => Array.from({ length: n }, (_, i) => `item-${from + i}`);
const heldOut = (all: string[], split: { evalFraction: number; minEval: number; seed: number }) => {
  const t = splitThreshold(
    all.map((id) => draw(split.seed, id, 'split')),
    split,
  );
  return new Set(all.filter((id) => draw(split.seed, id, 'split') <= t));
};

describe('held-out split', () => {
  const split = { evalFraction: 0.1, minEval: 20, seed: 0 };

  it('holds out about the configured share of a large set, and at least minEval of a small one', () => {
    const big = heldOut(ids(10_000), split);
    expect(big.size).toBeGreaterThan(900);
    expect(big.size).toBeLessThan(1100);
    expect(heldOut(ids(60), split).size).toBe(20);
  });

  it('depends on the seed and on nothing else', () => {
    expect([...heldOut(ids(500), split)]).toEqual([...heldOut(ids(500), split)]);
    expect([...heldOut(ids(500), { ...split, seed: 1 })]).not.toEqual([...heldOut(ids(500), split)]);
    // The order of the file does not matter.
    expect([...heldOut(ids(500).reverse(), split)].sort()).toEqual([...heldOut(ids(500), split)].sort());
  });

  it('as the dataset grows night after night, no item trained on before is ever held out', () => {
    // 10% more items each run, 40 runs (200 → about 9,000). A threshold taken as the 10% quantile
    // of today's draws moves up and down with the sample: that rule held out 20 trained items here.
    let before = ids(30);
    let held = heldOut(before, split);
    let moved = 0;
    for (let run = 0; run < 40; run++) {
      const after = [...before, ...ids(Math.ceil(before.length * 0.1), before.length)];
      const now = heldOut(after, split);
      for (const id of before) if (!held.has(id) && now.has(id)) moved++;
      expect(now.size).toBeGreaterThanOrEqual(split.minEval);
      before = after;
      held = now;
    }
    expect(before.length).toBeGreaterThan(1_000);
    expect(moved).toBe(0);
  });

  it('refuses a dataset too small to hold out minEval items and train on the rest', () => {
    expect(() =>
      splitThreshold(
        ids(20).map((id) => draw(0, id, 'split')),
        split,
      ),
    ).toThrow(/20 items: too few to hold out 20/);
    expect(() => splitThreshold([], split)).toThrow(/0 items/);
  });
});
