import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFeatures, readoutDim } from '../../format/readout.ts';

/** tokens whose value at patch (y, x), channel j is 100·y + 10·x + j, for hand-checkable means. */
function tokens(rows: number, cols: number, dim: number): Float32Array {
  const t = new Float32Array(rows * cols * dim);
  for (let y = 0; y < rows; y++)
    for (let x = 0; x < cols; x++) for (let j = 0; j < dim; j++) t[(y * cols + x) * dim + j] = 100 * y + 10 * x + j;
  return t;
}

const close = (a: ArrayLike<number>, b: number[]) =>
  b.forEach((v, i) => assert.ok(Math.abs(a[i] - v) < 1e-3, `[${i}] ${a[i]} vs ${v}`));

test('mean readout averages every patch', () => {
  const f = readFeatures('mean', tokens(3, 3, 2), 1, 3, 3, 2);
  assert.equal(f.length, readoutDim('mean', 2));
  close(f, [110, 111]);
});

test('grid2 on an odd grid gives the extra row/column to the top/left cells', () => {
  // 3×3: cells are rows {0,1}|{2} × cols {0,1}|{2}.
  const f = readFeatures('grid2', tokens(3, 3, 1), 1, 3, 3, 1);
  assert.equal(f.length, 4);
  close(f, [55, 20 + 50, 200 + 5, 220]);
});

test('grid4 pools 2×2 patch cells of an 8×8 grid, in raster order, per image', () => {
  const n = 2;
  const one = tokens(8, 8, 3);
  const t = new Float32Array(n * one.length);
  t.set(one, 0);
  t.set(
    one.map((v) => -v),
    one.length,
  );
  const f = readFeatures('grid4', t, n, 8, 8, 3);
  assert.equal(f.length, n * readoutDim('grid4', 3));
  assert.equal(readoutDim('grid4', 3), 48);
  // cell (1, 2) covers rows 2–3, cols 4–5: mean 250 + 45 = 295 (+ channel)
  const cell = (1 * 4 + 2) * 3;
  close(f.subarray(cell, cell + 3), [295, 296, 297]);
  close(f.subarray(48 + cell, 48 + cell + 3), [-295, -296, -297]);
});

test('a grid smaller than the readout is an error, not a silent zero', () => {
  assert.throws(() => readFeatures('grid4', tokens(2, 2, 1), 1, 2, 2, 1), /at least 4×4/);
  assert.throws(
    () => readFeatures('grid8', tokens(4, 4, 1), 1, 4, 4, 1),
    /grid8 needs a patch grid of at least 8×8, got 4×4/,
  );
  assert.equal(readoutDim('grid8', 5), 320);
});
