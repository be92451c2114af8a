import { tempDir } from '../tmp.ts';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readCheckpoint, writeCheckpoint } from '../../train/checkpoint.ts';
import { normalizedFeatureStd, rankMe, collapseWarning } from '../../train/diagnostics.ts';
import { tokenVarianceShares } from '../../bench/token-shares.ts';
import { AdamW } from '../../train/adamw.ts';
import { emaGap, emaUpdate } from '../../train/ema.ts';
import { randomArray } from '../helpers.ts';
import { resolveConfig } from '../../train/config.ts';

test('checkpoints round-trip and detect corruption or truncation', () => {
  const dir = tempDir('ijepa-ck-');
  const p = join(dir, 'checkpoint.bin');
  const a = randomArray(1001, 1);
  writeCheckpoint(p, { step: 7, nested: { x: [1, 2] } }, [
    ['a', a],
    ['b', new Float32Array([1, 2, 3])],
  ]);
  const c = readCheckpoint(p);
  assert.deepEqual(c.meta, { step: 7, nested: { x: [1, 2] } });
  assert.deepEqual(c.arrays.get('a'), a);
  const bytes = readFileSync(p);
  const flipped = Buffer.from(bytes);
  flipped[flipped.length - 5] ^= 0xff;
  writeFileSync(p, flipped);
  assert.throws(() => readCheckpoint(p), /checksum/);
  writeFileSync(p, bytes.subarray(0, bytes.length - 8));
  assert.throws(() => readCheckpoint(p), /truncated/);
  writeFileSync(p, 'not a checkpoint at all');
  assert.throws(() => readCheckpoint(p), /bad magic/);
});

test('feature std is ~1/sqrt(d) for isotropic features and 0 on collapse; RankMe spans 1..d', () => {
  const n = 512;
  const d = 32;
  const x = new Float32Array(n * d);
  let s = 7;
  for (let i = 0; i < x.length; i++) {
    // Box-Muller from an LCG: isotropic Gaussian rows.
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const u = (s + 1) / 4294967297;
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    x[i] = Math.sqrt(-2 * Math.log(u)) * Math.cos((2 * Math.PI * s) / 4294967296);
  }
  const healthy = normalizedFeatureStd(x, n, d);
  assert.ok(Math.abs(healthy - 1 / Math.sqrt(d)) < 0.02, `${healthy}`);
  assert.ok(rankMe(x, n, d) > 0.85 * d);
  const collapsed = new Float32Array(n * d);
  for (let i = 0; i < n; i++) collapsed.set(x.subarray(0, d), i * d);
  assert.ok(normalizedFeatureStd(collapsed, n, d) < 1e-6);
  assert.ok(rankMe(collapsed, n, d) < 1.1);
  assert.match(
    collapseWarning({ featStd: 0, featStdHealthy: 0.17, rankMe: 1, emaGap: 0, zeroLoss: 1 }, d)!,
    /COLLAPSE/,
  );
  assert.equal(collapseWarning({ featStd: 0.17, featStdHealthy: 0.17, rankMe: 30, emaGap: 0, zeroLoss: 1 }, d), null);
});

test('token variance splits into position, image and residual shares', () => {
  const [b, n, d] = [6, 5, 8];
  const make = (f: (i: number, p: number, j: number) => number) =>
    Float32Array.from({ length: b * n * d }, (_, k) => f(Math.floor(k / (n * d)), Math.floor(k / d) % n, k % d));
  // Every image the same: all of the variance is position.
  const pos = tokenVarianceShares(
    make((_i, p, j) => Math.sin(3 * p + j) + 0.1 * p * j),
    b,
    n,
    d,
  );
  assert.ok(pos.position > 0.999 && pos.image < 1e-9 && Math.abs(pos.residual) < 1e-9, JSON.stringify(pos));
  // Every patch of an image the same: all of it is image.
  const img = tokenVarianceShares(
    make((i, _p, j) => Math.cos(2 * i + j) + 0.2 * i * j),
    b,
    n,
    d,
  );
  assert.ok(img.image > 0.999 && img.position < 1e-9, JSON.stringify(img));
  // A mixture: the shares are fractions that sum to 1, each part present.
  const mix = tokenVarianceShares(
    make((i, p, j) => Math.sin(3 * p + j) + Math.cos(2 * i + j) + Math.sin(7 * i * p + 5 * j + i)),
    b,
    n,
    d,
  );
  assert.ok(Math.abs(mix.position + mix.image + mix.residual - 1) < 1e-9);
  for (const v of Object.values(mix)) assert.ok(v > 0.05 && v < 0.9, JSON.stringify(mix));
});

test('AdamW decays only parameters marked for decay; EMA moves the target towards the online weights', () => {
  const opt = new AdamW(2, Uint8Array.from([1, 0]));
  const p = new Float32Array([1, 1]);
  opt.step(p, new Float32Array([0, 0]), 0.1, 0.5);
  assert.ok(Math.abs(p[0] - 0.95) < 1e-6, 'decoupled decay: p -= lr*wd*p');
  assert.equal(p[1], 1);
  const fresh = new AdamW(1, Uint8Array.from([0]));
  const q = new Float32Array([1]);
  fresh.step(q, new Float32Array([3]), 0.1, 0);
  assert.ok(Math.abs(1 - q[0] - 0.1) < 1e-6, 'the first Adam step moves by lr whatever the gradient scale');
  const target = new Float32Array([0, 0]);
  emaUpdate(target, new Float32Array([1, 2]), 0.9);
  assert.ok(Math.abs(target[0] - 0.1) < 1e-7 && Math.abs(target[1] - 0.2) < 1e-7);
  assert.ok(Math.abs(emaGap(new Float32Array([3, 4]), new Float32Array([3, 4]))) < 1e-12);
});

test('config: presets, file overrides and flags merge; unknown or invalid fields are errors', () => {
  const c = resolveConfig('vit-tiny', { model: { depth: 2 }, optim: { lr: 5e-4 } }, { batch: 16 });
  assert.equal(c.model.depth, 2);
  assert.equal(c.model.dim, 192);
  assert.equal(c.optim.lr, 5e-4);
  assert.equal(c.optim.startLr, 2e-4);
  assert.equal(c.batch, 16);
  assert.throws(() => resolveConfig('vit-tiny', { batchSize: 3 } as never), /batchSize|unrecognized/i);
  assert.throws(() => resolveConfig('vit-tiny', { model: { patchSize: 5 } }), /multiple of patchSize/);
  assert.equal(c.targetLayers, 1);
  assert.throws(
    () => resolveConfig('vit-tiny', { targetLayers: 7 }),
    /targetLayers: targetLayers exceeds the encoder depth/,
  );
});
