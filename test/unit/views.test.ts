import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mirrorIndex, targetViewIdx } from '../../train/views.ts';
import { chunksOf } from '../../train/engine.ts';
import { defaultMaskConfig, sampleMasks } from '../../train/masks.ts';
import { Rng } from '../../model/rng.ts';

test('mirrorIndex mirrors columns within a row and is its own inverse', () => {
  const grid = { rows: 3, cols: 4 };
  assert.deepEqual(
    [0, 1, 2, 3, 4, 11].map((i) => mirrorIndex(grid, i)),
    [3, 2, 1, 0, 7, 8],
  );
  for (let i = 0; i < 12; i++) assert.equal(mirrorIndex(grid, mirrorIndex(grid, i)), i);
});

test('targetViewIdx maps only the flipped images, in every target block', () => {
  const grid = { rows: 2, cols: 2 };
  // [numTargets 2, batch 2, tgtLen 2]
  const idx = Int32Array.from([0, 1, 2, 3, 0, 2, 1, 3]);
  const out = targetViewIdx(idx, 2, 2, 2, Uint8Array.from([0, 1]), grid);
  assert.deepEqual(Array.from(out), [0, 1, 3, 2, 0, 2, 0, 2]);
  assert.deepEqual(Array.from(idx), [0, 1, 2, 3, 0, 2, 1, 3], 'the mask is not modified');
});

test("chunking a micro-batch moves each image's target view and flip flag with it", () => {
  const batch = 5;
  const per = 3;
  const masks = sampleMasks(Rng.for(4, 'm', 0), { rows: 4, cols: 4 }, batch, defaultMaskConfig);
  const fill = (f: (i: number) => number) =>
    Float32Array.from({ length: batch * per }, (_, k) => f(Math.floor(k / per)));
  const mb = {
    patches: fill((i) => i),
    batch,
    masks,
    targetView: { patches: fill((i) => 100 + i), flipped: Uint8Array.from([1, 0, 0, 1, 1]) },
  };
  const seen: number[] = [];
  for (const { part } of chunksOf(mb, 2, per)) {
    for (let b = 0; b < part.batch; b++) {
      const img = part.patches[b * per];
      seen.push(img);
      assert.equal(part.targetView!.patches[b * per], 100 + img);
      assert.equal(part.targetView!.flipped[b], mb.targetView.flipped[img]);
      assert.equal(part.masks.ctxCount[b], masks.ctxCount[img]);
    }
  }
  assert.deepEqual([...seen].sort(), [0, 1, 2, 3, 4]);
  assert.notDeepEqual(seen, [0, 1, 2, 3, 4], 'the chunks reorder the images (by context length)');
});
