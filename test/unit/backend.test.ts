/** Each wasm workaround against the cpu backend. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { onBackend, maxRelDiff, randomArray } from '../helpers.ts';
import { simplifyPermutation } from '../../train/tfjs/backend.ts';
import { TfOps } from '../../train/tfjs/ops.ts';

async function both<T>(f: () => T): Promise<[T, T]> {
  return [await onBackend('wasm', f), await onBackend('cpu', f)];
}

test('simplifyPermutation merges axes that stay adjacent', () => {
  assert.deepEqual(simplifyPermutation([2, 3, 4, 5], [0, 2, 3, 1]), { shape: [2, 3, 20], perm: [0, 2, 1] });
  assert.deepEqual(simplifyPermutation([2, 1, 4], [2, 1, 0]), { shape: [2, 4], perm: [1, 0] });
  assert.deepEqual(simplifyPermutation([6, 7], [0, 1]), { shape: [42], perm: [0] });
});

test('Transpose (JS kernel on wasm) matches cpu for 2-D to 6-D permutations', async () => {
  const cases: [number[], number[]][] = [
    [
      [37, 53],
      [1, 0],
    ],
    [
      [4, 9, 3, 8],
      [0, 2, 1, 3],
    ],
    [
      [4, 9, 3, 8],
      [0, 2, 3, 1],
    ],
    [
      [3, 5, 7],
      [2, 0, 1],
    ],
    [
      [2, 3, 4, 5, 6],
      [4, 2, 0, 3, 1],
    ],
    [
      [2, 3, 2, 2, 3, 2],
      [0, 2, 4, 3, 5, 1],
    ],
  ];
  for (const [shape, perm] of cases) {
    const data = randomArray(
      shape.reduce((a, b) => a * b, 1),
      1,
    );
    const [w, c] = await both(() => tf.tidy(() => tf.transpose(tf.tensor(data, shape), perm).dataSync().slice()));
    assert.deepEqual(w, c, `${shape} ${perm}`);
    const [wi, ci] = await both(() =>
      tf.tidy(() =>
        tf
          .transpose(
            tf.tensor(
              Int32Array.from(data, (v) => Math.round(v * 100)),
              shape,
              'int32',
            ),
            perm,
          )
          .dataSync()
          .slice(),
      ),
    );
    assert.deepEqual(wi, ci);
  }
});

test('batched MatMul (XNNPACK per matrix on wasm) matches cpu', async () => {
  const a = randomArray(2 * 3 * 7 * 5, 2);
  const b = randomArray(2 * 3 * 5 * 9, 3);
  const [w, c] = await both(() =>
    tf.tidy(() =>
      tf
        .matMul(tf.tensor(a, [2, 3, 7, 5]), tf.tensor(b, [2, 3, 5, 9]))
        .dataSync()
        .slice(),
    ),
  );
  assert.ok(maxRelDiff(w, c) < 1e-5);
});

test('MatMul gradients (explicit transposes) match cpu', async () => {
  const a = randomArray(6 * 4, 4);
  const b = randomArray(4 * 3, 5);
  const grads = () =>
    tf.tidy(() => {
      const g = tf.grads((x: tf.Tensor, y: tf.Tensor) =>
        tf.sum(tf.square(tf.matMul(x as tf.Tensor2D, y as tf.Tensor2D))),
      );
      return g([tf.tensor2d(a, [6, 4]), tf.tensor2d(b, [4, 3])]).map((t) => t.dataSync().slice());
    });
  const [w, c] = await both(grads);
  w.forEach((g, i) => assert.ok(maxRelDiff(g, c[i]) < 1e-5));
});

test('flattened token gather and its gradient (UnsortedSegmentSum in JS on wasm) match cpu', async () => {
  const x = randomArray(3 * 5 * 4, 6);
  const idx = [0, 4, 4, 1, 2, 2, 3, 0, 1];
  const run = () =>
    tf.tidy(() => {
      const ops = new TfOps(() => {
        throw new Error('no params');
      });
      const xt = tf.tensor3d(x, [3, 5, 4]);
      const it = tf.tensor2d(idx, [3, 3], 'int32');
      const out = ops.gatherTokens(xt, it).dataSync().slice();
      const g = tf
        .grad((v: tf.Tensor) => tf.sum(tf.mul(ops.gatherTokens(v, it), tf.range(0, 36).reshape([3, 3, 4]))))(xt)
        .dataSync()
        .slice();
      return { out, g };
    });
  const [w, c] = await both(run);
  // Reference: row b, token idx[b][k].
  for (let b = 0; b < 3; b++)
    for (let k = 0; k < 3; k++)
      for (let d = 0; d < 4; d++) {
        assert.equal(w.out[(b * 3 + k) * 4 + d], x[(b * 5 + idx[b * 3 + k]) * 4 + d]);
      }
  assert.deepEqual(w.out, c.out);
  assert.ok(maxRelDiff(w.g, c.g) < 1e-6);
});

test('Identity shares memory safely: a clone outlives its source', async () => {
  await onBackend('wasm', () => {
    const a = tf.tensor([1, 2, 3]);
    const b = tf.clone(a);
    a.dispose();
    assert.deepEqual(Array.from(b.dataSync()), [1, 2, 3]);
    b.dispose();
  });
});

test('SIMD kernels (wasm) match the JS reference kernels (cpu), odd sizes included', async () => {
  const { fused } = await import('../../train/tfjs/kernels.ts');
  const cases = [
    { name: 'gelu', shape: [7, 143], f: (x: tf.Tensor) => fused.gelu(x) },
    { name: 'softmax', shape: [5, 3, 57], f: (x: tf.Tensor) => fused.softmax(x) },
    {
      name: 'layerNorm',
      shape: [9, 96],
      f: (x: tf.Tensor) => fused.layerNorm(x, tf.range(1, 97).div(50), tf.range(0, 96).div(-30), 1e-6),
    },
    {
      name: 'layerNorm (d mod 4 ≠ 0)',
      shape: [4, 6],
      f: (x: tf.Tensor) => fused.layerNorm(x, tf.ones([6]), tf.zeros([6]), 1e-6),
    },
    { name: 'bias', shape: [11, 12], f: (x: tf.Tensor) => tf.add(x, tf.range(0, 12)) },
  ];
  for (const c of cases) {
    const data = randomArray(
      c.shape.reduce((a, b) => a * b, 1),
      7,
      3,
    );
    const run = () =>
      tf.tidy(() => {
        const x = tf.tensor(data, c.shape);
        const w = tf.tensor(randomArray(data.length, 8), c.shape);
        const [y] = [c.f(x)];
        const g = tf.grad((v: tf.Tensor) => tf.sum(tf.mul(c.f(v), w)))(x);
        return { y: y.dataSync().slice(), g: g.dataSync().slice() };
      });
    const [a, b] = await both(run);
    assert.ok(maxRelDiff(a.y, b.y) < 2e-6, `${c.name} forward: ${maxRelDiff(a.y, b.y)}`);
    assert.ok(maxRelDiff(a.g, b.g) < 1e-5, `${c.name} gradient: ${maxRelDiff(a.g, b.g)}`);
  }
});

test('the assembled SIMD module matches kernels.wat', async () => {
  const { assemble, render } = await import('../../train/tfjs/simd/build.ts');
  const { readFileSync } = await import('node:fs');
  const committed = readFileSync(new URL('../../train/tfjs/simd/kernels-wasm.ts', import.meta.url), 'utf8');
  assert.equal(committed, render(await assemble()), 'run npm run build:kernels');
});
