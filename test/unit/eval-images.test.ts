import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LabeledImages } from '../../eval/images.ts';
import { defaultPreprocess } from '../../format/preprocess.ts';
import type { Dataset } from '../../train/data/dataset.ts';

/** Ten 4×4 gray images, value 10·i; item 3 is not an image. */
function dataset(reads: number[]): Dataset {
  return {
    size: 10,
    classes: ['even', 'odd'],
    label: (i) => i % 2,
    read: async (i) => {
      reads.push(i);
      if (i === 3) return { kind: 'encoded', data: new Uint8Array([1, 2, 3]) };
      return { kind: 'raw', data: new Uint8Array(16).fill(10 * i), width: 4, height: 4, channels: 1 };
    },
    describe: (i) => `item ${i}`,
  };
}

async function collect(images: LabeledImages, size: number) {
  const out: { first: number; label: number }[] = [];
  let skipped = 0;
  for await (const b of images.batches(size)) {
    b.rgb.forEach((rgb, k) => out.push({ first: rgb[0], label: b.labels[k] }));
    skipped += b.skipped;
  }
  return { out, skipped };
}

test('evaluation images are decoded once and kept, or decoded per pass, with the same pixels either way', async () => {
  const items = [9, 3, 0, 4, 7];
  const p = defaultPreprocess(4);
  const warnings: string[] = [];
  const keptReads: number[] = [];
  const kept = await LabeledImages.open(dataset(keptReads), items, p, { log: (s) => warnings.push(s) });
  const streamedReads: number[] = [];
  const streamed = await LabeledImages.open(dataset(streamedReads), items, p, { log: () => {}, keep: false });
  const a = await collect(kept, 2);
  const a2 = await collect(kept, 3);
  const b = await collect(streamed, 2);
  await collect(streamed, 2);
  const expected = [
    { first: 90, label: 1 },
    { first: 0, label: 0 },
    { first: 40, label: 0 },
    { first: 70, label: 1 },
  ];
  assert.deepEqual(a.out, expected);
  assert.deepEqual(a2.out, expected);
  assert.deepEqual(b.out, expected);
  assert.equal(a.skipped, 1, 'the unreadable item is counted as skipped');
  assert.equal(b.skipped, 1);
  // Kept: read once for all passes; streamed: once per pass.
  assert.equal(keptReads.length, items.length);
  assert.equal(streamedReads.length, 2 * items.length);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /skipped unreadable image item 3/);
});
