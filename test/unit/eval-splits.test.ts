/** Which images the probes of `ijepa probe` and `ijepa eval` fit and score on. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { describeTest, labeledSplits } from '../../eval/probe.ts';
import { validationSplit } from '../../train/data/split.ts';

test('class folders (no test split) are scored on the validation split that --holdout pre-training skips, not a hold-out of their own', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'splits-'));
  try {
    for (const [cls, colour] of [
      ['cat', '#c00'],
      ['dog', '#0c0'],
    ] as const) {
      mkdirSync(join(dir, cls));
      for (let i = 0; i < 18; i++)
        await sharp({ create: { width: 8, height: 8, channels: 3, background: colour } })
          .png()
          .toFile(join(dir, cls, `${i}.png`));
    }
    const sp = labeledSplits({ data: dir, seed: 3 });
    const v = validationSplit(36);
    assert.equal(sp.split, 'validation');
    assert.equal(sp.test, sp.train);
    assert.deepEqual(sp.testItems, v.validation);
    assert.deepEqual(sp.trainItems, v.train);
    assert.match(sp.testSplit, /validation split: 6 training images held out; the data has no test split/);
    assert.equal(describeTest(sp), '6 validation images (the whole split)');
    // The seed picks subsamples, never the split itself; --limit subsamples the non-validation images.
    const limited = labeledSplits({ data: dir, seed: 4, limit: 10, testLimit: 4 });
    assert.deepEqual(limited.testItems.length, 4);
    assert.ok(limited.testItems.every((i) => v.validation.includes(i)));
    assert.equal(limited.trainItems.length, 10);
    assert.ok(limited.trainItems.every((i) => v.train.includes(i)));
    assert.equal(describeTest(limited), '4 of 6 validation images (seeded subsample)');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
