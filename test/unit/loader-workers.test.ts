/**
 * The loader's items made on worker threads: global and local views with colour ops, the same
 * floats whatever the number of threads, resumable, corrupt images skipped as on one thread.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BatchLoader, type Batch, type LoaderOptions } from '../../train/data/loader.ts';
import type { Dataset } from '../../train/data/dataset.ts';
import { defaultPreprocess, normalizePatches, resizeRgb } from '../../format/preprocess.ts';
import { Rng } from '../../model/rng.ts';
import { resizeCrop } from '../../train/data/resize.ts';

/** n random colour images of w×h; item `corrupt` is bytes no decoder reads. */
function colourImages(n: number, w: number, h: number, corrupt = -1): Dataset {
  const rng = Rng.for(7, 'images');
  const imgs = Array.from({ length: n }, () => Uint8Array.from({ length: w * h * 3 }, () => rng.int(256)));
  return {
    size: n,
    label: () => undefined,
    read: async (i) =>
      i === corrupt
        ? { kind: 'encoded', data: Uint8Array.from([0xff, 0xd8, 0xff, 0xe0, 1, 2, 3]) }
        : { kind: 'raw', data: imgs[i], width: w, height: h, channels: 3 },
    describe: (i) => `#${i}`,
  };
}

const multiCrop: LoaderOptions['augment'] = {
  cropScale: [0.3, 1],
  cropRatio: [0.75, 4 / 3],
  hflip: true,
  views: 2,
  localViews: 3,
  localSize: 4,
  localScale: [0.05, 0.4],
  colorJitter: { brightness: 0.4, contrast: 0.4, saturation: 0.2, hue: 0.1, p: 0.8 },
  grayscale: 0.2,
  solarize: 0.2,
};

async function take(loader: BatchLoader, n: number): Promise<Batch[]> {
  const out: Batch[] = [];
  for (let i = 0; i < n; i++) out.push(await loader.next());
  loader.close();
  return out;
}

test('the same batches, bit for bit, on this thread, one worker thread and two; a corrupt image is skipped the same way', async () => {
  // The first item of epoch 0's order is corrupt.
  const corrupt = Rng.for(9, 'order', 0).permutation(11)[0];
  const ds = colourImages(11, 12, 10, corrupt);
  for (const augment of [
    multiCrop,
    {
      cropScale: [0.5, 1] as [number, number],
      cropRatio: [0.75, 1.33] as [number, number],
      hflip: true,
      targetFlip: true,
    },
  ]) {
    const runs = [];
    for (const workers of [0, 1, 2]) {
      const skipped: string[] = [];
      const opts = { batch: 4, seed: 9, preprocess: defaultPreprocess(8), patch: 2, augment, workers };
      const batches = await take(new BatchLoader(ds, { ...opts, onSkip: (what) => skipped.push(what) }), 4);
      // What the batches taken skipped (the one prefetched when the loader closed may add more).
      const total = batches.reduce((n, b) => n + b.skipped, 0);
      runs.push({ batches, skipped: skipped.slice(0, total) });
    }
    const [inline, ...threaded] = runs;
    assert.ok(inline.skipped.includes(`#${corrupt}`), `${inline.skipped}`);
    assert.equal(inline.batches[3].end.epoch, 1, 'the stream crosses an epoch');
    if (augment.localViews) assert.equal(inline.batches[0].locals?.length, 4 * 3 * 4 * 4 * 3);
    for (const r of threaded) {
      assert.deepEqual(r.skipped, inline.skipped);
      for (const [k, b] of r.batches.entries()) {
        const want = inline.batches[k];
        assert.deepEqual(b.patches, want.patches, `batch ${k}`);
        assert.deepEqual(b.views, want.views);
        assert.deepEqual(b.locals, want.locals);
        assert.deepEqual(b.targetView, want.targetView);
        assert.deepEqual([b.end, b.skipped], [want.end, want.skipped]);
      }
    }
  }
});

test('local views: [batch, localViews, Nl, p·p·3] at localSize, normalised as the model input is', async () => {
  const ds = colourImages(6, 12, 12);
  const p = defaultPreprocess(8);
  const patch = 2;
  const augment = {
    cropScale: null,
    cropRatio: [1, 1] as [number, number],
    hflip: false,
    views: 1,
    localViews: 2,
    localSize: 4,
    // The whole (square) image: each local view is it resized to 4×4.
    localScale: [1, 1] as [number, number],
  };
  const [b] = await take(new BatchLoader(ds, { batch: 3, seed: 1, preprocess: p, patch, augment, workers: 1 }), 1);
  const per = 8 * 8 * 3;
  const perLocal = 4 * 4 * 3;
  assert.equal(b.locals!.length, 3 * 2 * perLocal);
  // The batch's own patches are the whole image through sharp; views are resized by resize.ts.
  const expect = async (i: number, size: number) => {
    const src = await ds.read(i);
    if (src.kind !== 'raw') throw new Error('raw images only');
    const img = { data: src.data, width: 12, height: 12 };
    const q = { ...p, size };
    const rgb =
      size === 8 ? await resizeRgb(img, q) : resizeCrop(img, { left: 0, top: 0, width: 12, height: 12 }, size);
    const out = new Float32Array(size * size * 3);
    normalizePatches(rgb, q, patch, out);
    return out;
  };
  for (let n = 0; n < 3; n++) {
    // Which image sits at batch position n: the one whose whole-image patches these are.
    let found = -1;
    for (let i = 0; i < ds.size; i++)
      if (Buffer.from((await expect(i, 8)).buffer).equals(Buffer.from(b.patches.slice(n * per, (n + 1) * per).buffer)))
        found = i;
    assert.ok(found >= 0, `batch position ${n}`);
    const local = await expect(found, 4);
    for (let v = 0; v < 2; v++)
      assert.deepEqual(b.locals!.subarray((n * 2 + v) * perLocal, (n * 2 + v + 1) * perLocal), local);
  }
});

test('multi-crop batches on two worker threads resume from a position', async () => {
  const ds = colourImages(10, 12, 10);
  const opts = { batch: 3, seed: 5, preprocess: defaultPreprocess(8), patch: 2, augment: multiCrop, workers: 2 };
  const seq = await take(new BatchLoader(ds, opts), 4);
  const resumed = await take(new BatchLoader(ds, opts, seq[1].end), 2);
  for (const [k, b] of resumed.entries()) {
    assert.deepEqual(b.views, seq[k + 2].views);
    assert.deepEqual(b.locals, seq[k + 2].locals);
  }
  assert.equal(seq[0].locals?.length, 3 * 3 * 4 * 4 * 3);
  const views = seq[0].views!;
  const per = 8 * 8 * 3;
  assert.notDeepEqual(views.subarray(0, per), views.subarray(per, 2 * per), 'the views of an image differ');
});

test('a closed loader yields no more batches', async () => {
  const ds = colourImages(6, 8, 8);
  const loader = new BatchLoader(ds, {
    batch: 2,
    seed: 0,
    preprocess: defaultPreprocess(8),
    patch: 4,
    augment: multiCrop,
  });
  await loader.next();
  loader.close();
  await assert.rejects(loader.next(), /closed/);
});
