import { tempDir } from '../tmp.ts';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import sharp from 'sharp';
import { IdxDataset, parseIdx } from '../../train/data/idx.ts';
import { Stl10Dataset, stl10ToHwc } from '../../train/data/stl10.ts';
import { FolderDataset } from '../../train/data/folder.ts';
import { openDataset } from '../../train/data/open.ts';
import { BatchLoader } from '../../train/data/loader.ts';
import { mirrorIndex } from '../../train/views.ts';
import { decodeRgb, defaultPreprocess, normalizePatches, toRgb } from '../../format/preprocess.ts';

function idxBytes(dims: number[], data: Uint8Array, type = 0x08): Buffer {
  const head = Buffer.alloc(4 + 4 * dims.length);
  head[2] = type;
  head[3] = dims.length;
  dims.forEach((d, i) => head.writeUInt32BE(d, 4 + 4 * i));
  return Buffer.concat([head, Buffer.from(data)]);
}

const tmp = () => tempDir('ijepa-data-');

test('IDX: plain and gzipped files, MNIST-style directories, clear errors', async () => {
  const dir = tmp();
  const pixels = Uint8Array.from({ length: 3 * 28 * 28 }, (_, i) => i % 251);
  writeFileSync(join(dir, 'train-images-idx3-ubyte.gz'), gzipSync(idxBytes([3, 28, 28], pixels)));
  writeFileSync(join(dir, 'train-labels-idx1-ubyte'), idxBytes([3], Uint8Array.from([2, 0, 1])));
  const ds = IdxDataset.fromDir(dir, 'train');
  assert.equal(ds.size, 3);
  assert.equal(ds.label(0), 2);
  assert.deepEqual(ds.classes, ['0', '1', '2']);
  const img = await ds.read(1);
  assert.equal(img.kind, 'raw');
  assert.deepEqual(Array.from((img as { data: Uint8Array }).data.subarray(0, 3)), [
    Array.from(pixels)[784],
    pixels[785],
    pixels[786],
  ]);
  assert.throws(() => parseIdx(idxBytes([2], Uint8Array.from([1]))), /truncated/);
  assert.throws(() => parseIdx(Buffer.from('hello world')), /bad magic/);
  assert.throws(() => parseIdx(idxBytes([1], Uint8Array.from([0, 0, 0, 0]), 0x0d)), /not supported/);
  assert.throws(() => IdxDataset.fromDir(dir, 'test'), /t10k-images/);
  assert.ok(openDataset(dir) instanceof IdxDataset);
});

test('STL-10: column-major planar bytes become row-major RGB, labels are 1-based', async () => {
  const dir = tmp();
  const n = 2;
  const bytes = new Uint8Array(n * 96 * 96 * 3);
  // Image 1: pixel (row y, col x) of channel c = (c*50 + y + 2x) mod 256, stored column-major.
  for (let c = 0; c < 3; c++)
    for (let x = 0; x < 96; x++)
      for (let y = 0; y < 96; y++) {
        bytes[96 * 96 * 3 + c * 9216 + x * 96 + y] = (c * 50 + y + 2 * x) % 256;
      }
  writeFileSync(join(dir, 'train_X.bin'), bytes);
  writeFileSync(join(dir, 'train_y.bin'), Uint8Array.from([1, 10]));
  const ds = new Stl10Dataset(dir, 'train');
  assert.equal(ds.size, 2);
  assert.equal(ds.label(1), 9);
  assert.equal(ds.classes![9], 'truck');
  const img = (await ds.read(1)) as { data: Uint8Array; width: number };
  const at = (y: number, x: number, c: number) => img.data[(y * 96 + x) * 3 + c];
  assert.equal(at(0, 1, 0), 2);
  assert.equal(at(5, 0, 1), 55);
  assert.equal(at(3, 7, 2), (100 + 3 + 14) % 256);
  assert.equal(stl10ToHwc(bytes.subarray(0, 27648)).length, 27648);
  writeFileSync(join(dir, 'test_X.bin'), new Uint8Array(100));
  assert.throws(() => new Stl10Dataset(dir, 'test'), /whole number/);
  assert.ok(openDataset(dir) instanceof Stl10Dataset);
  await ds.close();
});

test('image folders: sub-folders are classes; a corrupt image is skipped and counted', async () => {
  const dir = tmp();
  for (const [cls, colour] of [
    ['cats', '#ff0000'],
    ['dogs', '#0000ff'],
  ] as const) {
    mkdirSync(join(dir, cls));
    for (let i = 0; i < 3; i++) {
      const png = await sharp({ create: { width: 20 + i, height: 12, channels: 4, background: colour } })
        .png()
        .toBuffer();
      writeFileSync(join(dir, cls, `${i}.png`), png);
    }
  }
  writeFileSync(join(dir, 'dogs', 'broken.jpg'), Buffer.from([0xff, 0xd8, 0xff, 0xe0, 1, 2, 3]));
  const ds = new FolderDataset(dir);
  assert.deepEqual(ds.classes, ['cats', 'dogs']);
  assert.equal(ds.size, 7);
  assert.equal(ds.label(0), 0);
  const skipped: string[] = [];
  const loader = new BatchLoader(ds, {
    batch: 3,
    seed: 1,
    preprocess: defaultPreprocess(8),
    patch: 4,
    augment: { cropScale: [0.5, 1], cropRatio: [0.75, 1.33], hflip: true },
    onSkip: (what) => skipped.push(what),
  });
  assert.equal(loader.batchesPerEpoch, 2);
  const batches = [await loader.next(), await loader.next(), await loader.next()];
  for (const b of batches) assert.equal(b.patches.length, 3 * 4 * 48);
  assert.ok(skipped.some((s) => s.endsWith('broken.jpg')));
  assert.ok(loader.skippedTotal >= 1);
});

test('the loader is reproducible and resumes mid-stream', async () => {
  const dir = tmp();
  writeFileSync(
    join(dir, 'train-images-idx3-ubyte'),
    idxBytes(
      [10, 8, 8],
      Uint8Array.from({ length: 640 }, (_, i) => (i * 7) % 256),
    ),
  );
  const ds = openDataset(dir);
  const opts = {
    batch: 3,
    seed: 5,
    preprocess: defaultPreprocess(8),
    patch: 4,
    augment: { cropScale: [0.5, 1] as [number, number], cropRatio: [0.75, 1.33] as [number, number], hflip: true },
  };
  const a = new BatchLoader(ds, opts);
  const seq = [];
  for (let i = 0; i < 5; i++) seq.push(await a.next());
  const b = new BatchLoader(ds, opts, seq[1].end);
  assert.deepEqual((await b.next()).patches, seq[2].patches);
  assert.deepEqual((await b.next()).patches, seq[3].patches);
  assert.equal(seq[3].end.epoch, 1, '3 batches of 3 per 10-image epoch, then a new epoch');
});

test('decoded images are kept across epochs without changing a single batch, up to the cache budget', async () => {
  const dir = tmp();
  // 10 images of 6×6 resized to 8×8: the resize is what is kept when there is no crop to draw.
  writeFileSync(
    join(dir, 'train-images-idx3-ubyte'),
    idxBytes(
      [10, 6, 6],
      Uint8Array.from({ length: 360 }, (_, i) => (i * 11) % 256),
    ),
  );
  const ds = openDataset(dir);
  for (const cropScale of [null, [0.5, 1] as [number, number]]) {
    const opts = {
      batch: 3,
      seed: 5,
      preprocess: defaultPreprocess(8),
      patch: 4,
      augment: { cropScale, cropRatio: [0.75, 1.33] as [number, number], hflip: true },
    };
    const cached = new BatchLoader(ds, opts);
    const uncached = new BatchLoader(ds, { ...opts, cacheBytes: 0 });
    const partly = new BatchLoader(ds, { ...opts, cacheBytes: 4 * 8 * 8 * 3 });
    for (let i = 0; i < 9; i++) {
      const want = (await uncached.next()).patches;
      assert.deepEqual((await cached.next()).patches, want, `batch ${i}, crop ${cropScale}`);
      assert.deepEqual((await partly.next()).patches, want);
    }
    // Three epochs of 9 items: each of the 10 decoded once at most (the prefetched batch included).
    assert.ok(cached.decodes <= 10, `${cached.decodes} decodes`);
    assert.ok(uncached.decodes >= 27, `${uncached.decodes} decodes`);
    assert.ok(partly.decodes > cached.decodes && partly.decodes < uncached.decodes);
  }
});

test('preprocessing: grayscale replicated, alpha flattened, patch layout (row, col, channel)', async () => {
  const p = {
    size: 4,
    mean: [0, 0, 0] as [number, number, number],
    std: [1, 1, 1] as [number, number, number],
    resize: 'squash' as const,
  };
  const gray = await toRgb({ kind: 'raw', data: new Uint8Array(16).fill(51), width: 4, height: 4, channels: 1 }, p);
  assert.deepEqual(Array.from(gray.subarray(0, 6)), [51, 51, 51, 51, 51, 51]);
  const transparent = await sharp({
    create: { width: 4, height: 4, channels: 4, background: { r: 0, g: 0, b: 0, alpha: 0 } },
  })
    .png()
    .toBuffer();
  const flat = await decodeRgb({ kind: 'encoded', data: transparent });
  assert.deepEqual(Array.from(flat.data.subarray(0, 3)), [255, 255, 255]);
  const rgb = Uint8Array.from({ length: 48 }, (_, i) => i);
  const out = new Float32Array(48);
  normalizePatches(rgb, p, 2, out);
  // Patch (0,1) starts at pixel (0,2): bytes 6,7,8.
  assert.ok(Math.abs(out[12] - 6 / 255) < 1e-7);
  // Second row inside patch (0,0) is pixel (1,0): bytes 12..14.
  assert.ok(Math.abs(out[6] - 12 / 255) < 1e-7);
});

test('the validation split is fixed, disjoint from training, and 1/6 of the items; subset re-indexes', async () => {
  const { validationSplit } = await import('../../train/data/split.ts');
  const { subset } = await import('../../train/data/dataset.ts');
  const a = validationSplit(60000);
  assert.equal(a.validation.length, 10000);
  assert.equal(a.train.length, 50000);
  const seen = new Set([...a.train, ...a.validation]);
  assert.equal(seen.size, 60000);
  assert.deepEqual(validationSplit(60000).validation.slice(0, 20), a.validation.slice(0, 20));
  const labels = Array.from({ length: 12 }, (_, i) => i % 3);
  const ds = {
    size: 12,
    classes: ['a', 'b', 'c'],
    label: (i: number) => labels[i],
    read: async (i: number) => ({ kind: 'encoded' as const, data: new Uint8Array([i]) }),
    describe: (i: number) => `#${i}`,
  };
  const v = validationSplit(12);
  const s = subset(ds, v.train);
  assert.equal(s.size, 10);
  assert.equal(s.label(3), labels[v.train[3]]);
  assert.equal(s.describe(0), `#${v.train[0]}`);
});

test('target view: the mirrored image, flagged per item, whose patch at mirrorIndex(i) is patch i mirrored; the context stream is unchanged', async () => {
  const dir = tmp();
  writeFileSync(
    join(dir, 'train-images-idx3-ubyte'),
    idxBytes(
      [12, 8, 8],
      Uint8Array.from({ length: 768 }, (_, i) => (i * 37) % 251),
    ),
  );
  const ds = openDataset(dir);
  const augment = { cropScale: null, cropRatio: [0.75, 1.33] as [number, number], hflip: false };
  const opts = { batch: 6, seed: 2, preprocess: defaultPreprocess(8), patch: 4 };
  const plain = await new BatchLoader(ds, { ...opts, augment }).next();
  const b = await new BatchLoader(ds, { ...opts, augment: { ...augment, targetFlip: true } }).next();
  assert.deepEqual(b.patches, plain.patches, 'the context view does not depend on the target view');
  const v = b.targetView!;
  const flips = Array.from(v.flipped).reduce((a, f) => a + f, 0);
  assert.ok(flips > 0 && flips < 6, `some items mirrored, some not (${flips} of 6)`);
  const grid = { rows: 2, cols: 2 };
  const per = 16 * 3;
  const img = 4 * per;
  for (let n = 0; n < 6; n++) {
    for (let i = 0; i < 4; i++) {
      const src = b.patches.subarray(n * img + i * per, n * img + (i + 1) * per);
      const j = v.flipped[n] ? mirrorIndex(grid, i) : i;
      const dst = v.patches.subarray(n * img + j * per, n * img + (j + 1) * per);
      for (let y = 0; y < 4; y++)
        for (let x = 0; x < 4; x++)
          for (let c = 0; c < 3; c++) {
            const xx = v.flipped[n] ? 3 - x : x;
            assert.equal(dst[(y * 4 + xx) * 3 + c], src[(y * 4 + x) * 3 + c]);
          }
    }
  }
});

test('views: each image comes as its own crops, laid out [image, view]; the batch patches are the whole image; seeded', async () => {
  const dir = tmp();
  writeFileSync(
    join(dir, 'train-images-idx3-ubyte'),
    idxBytes(
      [12, 8, 8],
      Uint8Array.from({ length: 768 }, (_, i) => (i * 37) % 251),
    ),
  );
  const ds = openDataset(dir);
  const augment = {
    cropScale: [0.3, 1] as [number, number],
    cropRatio: [0.75, 1.33] as [number, number],
    hflip: true,
    colorJitter: { brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.1, p: 0.8 },
    grayscale: 0.2,
    solarize: 0.2,
  };
  const opts = { batch: 4, seed: 3, preprocess: defaultPreprocess(8), patch: 4 };
  const whole = await new BatchLoader(ds, {
    ...opts,
    augment: { ...augment, cropScale: null, hflip: false, colorJitter: null, grayscale: 0, solarize: 0 },
  }).next();
  const b = await new BatchLoader(ds, { ...opts, augment: { ...augment, views: 3 } }).next();
  const again = await new BatchLoader(ds, { ...opts, augment: { ...augment, views: 3 } }).next();
  const per = 4 * 48;
  assert.equal(b.views!.length, 4 * 3 * per);
  assert.deepEqual(b.views, again.views);
  assert.deepEqual(b.patches, whole.patches);
  for (let i = 0; i < 4; i++) {
    const view = (v: number) => b.views!.subarray((i * 3 + v) * per, (i * 3 + v + 1) * per);
    assert.notDeepEqual(view(0), view(1), `image ${i}: its views differ`);
  }
});
