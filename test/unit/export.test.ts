/** ONNX export from the same model definition: TF.js and onnxruntime agree on the same weights. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { onBackend, tinyModel, randomArray } from '../helpers.ts';
import { encoderGraph, predictorGraph } from '../../onnx/inference.ts';
import { OnnxModel } from '../../runtime/model.ts';
import { ParamStore } from '../../model/params.ts';
import { encode, encoderSpecs, predict, predictorSpecs } from '../../model/vit.ts';
import { TfOps } from '../../train/tfjs/ops.ts';
import { presets } from '../../model/presets.ts';

function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

for (const [name, m] of [
  ['tiny', tinyModel],
  ['vit-tiny', presets['vit-tiny']],
] as const) {
  test(`encoder export parity (${name}): TF.js vs onnxruntime, max |Δ| ≤ 1e-4`, async () => {
    const weights = ParamStore.init(encoderSpecs(m), 5, 'init');
    // Perturb norms and biases so the test sees non-default values everywhere.
    for (let i = 0; i < weights.data.length; i++) weights.data[i] += 0.01 * Math.sin(i);
    const b = 3;
    const images = randomArray(b * 3 * m.imageSize * m.imageSize, 6, 2);
    const ref = await onBackend('wasm', () =>
      tf.tidy(() => {
        const tensors = new Map(weights.specs.map((s) => [s.name, tf.tensor(weights.view(s.name), s.shape)]));
        const ops = new TfOps((n) => tensors.get(n)!);
        const h = encode(ops, m, ops.patchify(tf.tensor4d(images, [b, 3, m.imageSize, m.imageSize]), m.patchSize));
        return { tokens: h.dataSync().slice(), pooled: tf.mean(h, 1).dataSync().slice() };
      }),
    );
    const model = await OnnxModel.load(encoderGraph(m, weights));
    const out = await model.run({ images: { data: images, dims: [b, 3, m.imageSize, m.imageSize] } });
    assert.deepEqual([...out.tokens.dims], [b, (m.imageSize / m.patchSize) ** 2, m.dim]);
    assert.ok(maxAbs(out.tokens.data, ref.tokens) <= 1e-4, `tokens ${maxAbs(out.tokens.data, ref.tokens)}`);
    assert.ok(maxAbs(out.pooled.data, ref.pooled) <= 1e-4, `pooled ${maxAbs(out.pooled.data, ref.pooled)}`);
    await model.release();
  });
}

test('an encoder exported at k blocks (export --layers) is the first k blocks + final norm of the full one', async () => {
  const m = { ...tinyModel, depth: 3 };
  const weights = ParamStore.init(encoderSpecs(m), 9, 'init');
  for (let i = 0; i < weights.data.length; i++) weights.data[i] += 0.01 * Math.cos(i);
  const images = randomArray(2 * 3 * m.imageSize * m.imageSize, 10, 2);
  const short = { ...m, depth: 1 };
  const ref = await onBackend('wasm', () =>
    tf.tidy(() => {
      const tensors = new Map(weights.specs.map((s) => [s.name, tf.tensor(weights.view(s.name), s.shape)]));
      const ops = new TfOps((n) => tensors.get(n)!);
      return encode(ops, short, ops.patchify(tf.tensor4d(images, [2, 3, m.imageSize, m.imageSize]), m.patchSize))
        .dataSync()
        .slice();
    }),
  );
  const dims = [2, 3, m.imageSize, m.imageSize];
  const truncated = await OnnxModel.load(encoderGraph(short, weights));
  const full = await OnnxModel.load(encoderGraph(m, weights));
  const a = (await truncated.run({ images: { data: images, dims } })).tokens.data;
  const b = (await full.run({ images: { data: images, dims } })).tokens.data;
  assert.ok(maxAbs(a, ref) <= 1e-4, `tokens ${maxAbs(a, ref)}`);
  assert.ok(maxAbs(a, b) > 1e-2, 'the truncated encoder must differ from the full one');
  await truncated.release();
  await full.release();
});

test('predictor export parity: TF.js vs onnxruntime on the same context and targets', async () => {
  const m = tinyModel;
  const weights = ParamStore.init([...encoderSpecs(m), ...predictorSpecs(m)], 7, 'init');
  const ctx = randomArray(2 * 5 * m.dim, 8);
  const ctxIdx = [0, 1, 2, 5, 5, 3, 4, 8, 9, 12];
  const keyMask = [1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1];
  const tgtIdx = [10, 11, 14, 7, 6, 15];
  const ref = await onBackend('wasm', () =>
    tf.tidy(() => {
      const tensors = new Map(weights.specs.map((s) => [s.name, tf.tensor(weights.view(s.name), s.shape)]));
      const ops = new TfOps((n) => tensors.get(n)!);
      return predict(ops, m, {
        context: tf.tensor3d(ctx, [2, 5, m.dim]),
        ctxIdx: tf.tensor2d(ctxIdx, [2, 5], 'int32'),
        keyMask: tf.tensor2d(keyMask, [2, 8]),
        tgtIdx: tf.tensor2d(tgtIdx, [2, 3], 'int32'),
        numTargets: 1,
      })
        .dataSync()
        .slice();
    }),
  );
  const model = await OnnxModel.load(predictorGraph(m, weights));
  const out = await model.run({
    context: { data: ctx, dims: [2, 5, m.dim] },
    ctx_idx: { data: BigInt64Array.from(ctxIdx.map(BigInt)), dims: [2, 5] },
    key_mask: { data: Float32Array.from(keyMask), dims: [2, 8] },
    tgt_idx: { data: BigInt64Array.from(tgtIdx.map(BigInt)), dims: [2, 3] },
  });
  assert.deepEqual([...out.pred.dims], [2, 3, m.dim]);
  assert.ok(maxAbs(out.pred.data, ref) <= 1e-4, `pred ${maxAbs(out.pred.data, ref)}`);
  await model.release();
});
