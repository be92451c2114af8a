import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { onBackend, tinyModel, maxRelDiff, randomArray } from '../helpers.ts';
import { TfOps } from '../../train/tfjs/ops.ts';
import { encode, predict, encoderSpecs, predictorSpecs, countParams } from '../../model/vit.ts';
import { presets } from '../../model/presets.ts';
import { ParamStore } from '../../model/params.ts';
import { predictionLoss } from '../../train/tfjs/loss.ts';
import { TfjsEngine } from '../../train/tfjs/engine.ts';
import { sampleMasks, defaultMaskConfig } from '../../train/masks.ts';
import { Rng } from '../../model/rng.ts';

const m = tinyModel;
const N = 16;
const PD = 48;

function opsFor(store: ParamStore, fusedKernels?: boolean) {
  const tensors = new Map(store.specs.map((s) => [s.name, tf.tensor(store.view(s.name), s.shape)]));
  return {
    ops: new TfOps((n) => tensors.get(n)!, new Map(), fusedKernels),
    dispose: () => tf.dispose([...tensors.values()]),
  };
}

test('vit-base-16 has ~86M encoder parameters', () => {
  const n = countParams(encoderSpecs(presets['vit-base-16']));
  assert.ok(n > 85e6 && n < 87e6, `${n}`);
});

for (const backend of ['wasm', 'cpu'] as const) {
  test(`[${backend}] padding is ignored, not attended (key-mask polarity)`, async () => {
    await onBackend(backend, () => {
      const store = ParamStore.init([...encoderSpecs(m), ...predictorSpecs(m)], 1, 'init');
      const { ops, dispose } = opsFor(store);
      const patches = tf.tensor3d(randomArray(2 * N * PD, 2), [2, N, PD]);
      // Image 0 has 5 real context tokens and 3 padding slots; image 1 has 8 real ones.
      const idxA = [1, 4, 6, 9, 15, 1, 1, 1, 0, 2, 3, 5, 7, 8, 10, 11];
      const idxB = [1, 4, 6, 9, 15, 12, 13, 14, 0, 2, 3, 5, 7, 8, 10, 11]; // padding slots point elsewhere
      const mask = [1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];
      const run = (idx: number[], msk: number[]) =>
        tf.tidy(
          () =>
            encode(ops, m, patches, { idx: tf.tensor2d(idx, [2, 8], 'int32'), mask: tf.tensor2d(msk, [2, 8]) })
              .dataSync()
              .slice() as Float32Array,
        );
      const real = (out: Float32Array) => [...out.subarray(0, 5 * m.dim), ...out.subarray(8 * m.dim)];
      assert.ok(maxRelDiff(real(run(idxA, mask)), real(run(idxB, mask))) < 1e-6, 'padding changed real-token outputs');
      // The test can fail: attending to padding (an all-ones mask, or an inverted one) changes them.
      const ones = mask.map(() => 1);
      assert.ok(maxRelDiff(real(run(idxA, ones)), real(run(idxB, ones))) > 1e-3);
      const inverted = mask.map((v) => 1 - v);
      assert.ok(maxRelDiff(real(run(idxA, inverted)), real(run(idxB, inverted))) > 1e-3);

      // Same for the predictor: padded context slots must not reach the target predictions.
      const predictWith = (ctxVals: Float32Array) =>
        tf.tidy(() => {
          const context = tf.tensor3d(ctxVals, [1, 6, m.dim]);
          return predict(ops, m, {
            context,
            ctxIdx: tf.tensor2d([0, 1, 2, 3, 0, 0], [1, 6], 'int32'),
            keyMask: tf.tensor2d([1, 1, 1, 1, 0, 0, 1, 1], [1, 8]),
            tgtIdx: tf.tensor2d([9, 10], [1, 2], 'int32'),
            numTargets: 1,
          })
            .dataSync()
            .slice() as Float32Array;
        });
      const ctx = randomArray(6 * m.dim, 3);
      const changed = ctx.slice();
      changed.fill(5, 4 * m.dim);
      assert.ok(maxRelDiff(predictWith(ctx), predictWith(changed)) < 1e-6);
      dispose();
    });
  });
}

test('the loss is a mean: its scale does not depend on how many target patches were sampled', async () => {
  await onBackend('wasm', () => {
    for (const kind of ['mse', 'smooth-l1'] as const) {
      const values = [4, 9, 30].map((t) =>
        tf.tidy(() => predictionLoss(tf.fill([8, t, 32], 0.5), tf.zeros([8, t, 32]), kind).dataSync()[0]),
      );
      for (const v of values) assert.ok(Math.abs(v - (kind === 'mse' ? 0.25 : 0.125)) < 1e-7, `${kind}: ${values}`);
    }
    // And through the engine: at init, targets are layer-normed, so the loss is ~1 whatever the block size.
    const online = ParamStore.init([...encoderSpecs(m), ...predictorSpecs(m)], 3, 'init');
    const target = new ParamStore(encoderSpecs(m), online.data.slice(0, new ParamStore(encoderSpecs(m)).size));
    const engine = new TfjsEngine(m, online, target, { loss: 'mse', sigregWeight: 0, sigregProjections: 8, seed: 0 });
    const losses = [
      [0.05, 0.06],
      [0.3, 0.35],
    ].map(([lo, hi]) => {
      const masks = sampleMasks(new Rng(4), { rows: 4, cols: 4 }, 4, {
        ...defaultMaskConfig,
        numTargets: 2,
        targetScale: [lo, hi],
        minKeep: 1,
      });
      return engine.forwardBackward(
        { patches: randomArray(4 * N * PD, 5), batch: 4, masks },
        new Float32Array(online.size),
        1,
        0,
      ).loss;
    });
    for (const l of losses) assert.ok(l > 0.5 && l < 2, `${losses}`);
    engine.dispose();
  });
});

/** Loss and gradients of one I-JEPA step on the given backend and kernel choice. */
async function stepOn(backend: 'wasm' | 'cpu', opts: { chunk?: number; sigreg?: number } = {}) {
  return onBackend(backend, () => {
    const online = ParamStore.init([...encoderSpecs(m), ...predictorSpecs(m)], 11, 'init');
    const target = ParamStore.init(encoderSpecs(m), 12, 'init');
    const engine = new TfjsEngine(m, online, target, {
      loss: 'mse',
      sigregWeight: opts.sigreg ?? 0,
      sigregProjections: 8,
      seed: 0,
      chunk: opts.chunk,
    });
    const masks = sampleMasks(new Rng(9), { rows: 4, cols: 4 }, 6, {
      ...defaultMaskConfig,
      minKeep: 1,
      targetScale: [0.1, 0.15],
    });
    const grad = new Float32Array(online.size);
    const r = engine.forwardBackward({ patches: randomArray(6 * N * PD, 13), batch: 6, masks }, grad, 1, 0);
    engine.dispose();
    return { loss: r.loss, grad };
  });
}

test('wasm (with its kernel workarounds) matches the cpu backend on a whole I-JEPA step', async () => {
  const a = await stepOn('wasm');
  const b = await stepOn('cpu');
  assert.ok(Math.abs(a.loss - b.loss) < 1e-5, `${a.loss} vs ${b.loss}`);
  assert.ok(maxRelDiff(a.grad, b.grad) < 1e-4, `grad diff ${maxRelDiff(a.grad, b.grad)}`);
  assert.ok(a.grad.some((v) => v !== 0));
});

test('chunking a micro-batch does not change its loss or gradients', async () => {
  const whole = await stepOn('wasm');
  const chunked = await stepOn('wasm', { chunk: 4 });
  assert.ok(Math.abs(whole.loss - chunked.loss) < 1e-5);
  assert.ok(maxRelDiff(chunked.grad, whole.grad) < 1e-4, `${maxRelDiff(chunked.grad, whole.grad)}`);
});

test('SIGReg adds a differentiable term', async () => {
  const plain = await stepOn('wasm');
  const reg = await stepOn('wasm', { sigreg: 0.5 });
  assert.ok(reg.loss > plain.loss);
  assert.ok(maxRelDiff(reg.grad, plain.grad) > 1e-6);
});

test('fused kernels match the composite ops (values and gradients)', async () => {
  await onBackend('cpu', () => {
    const store = ParamStore.init(encoderSpecs(m), 21, 'init');
    const vars = store.specs.map((s) => tf.variable(tf.tensor(store.view(s.name), s.shape), true, `p/${s.name}`));
    const byName = new Map(store.specs.map((s, i) => [s.name, vars[i]]));
    const patches = tf.tensor3d(randomArray(2 * N * PD, 22), [2, N, PD]);
    const run = (fusedKernels: boolean) => {
      const ops = new TfOps((n) => byName.get(n)!, new Map(), fusedKernels);
      const { value, grads } = tf.variableGrads(() => {
        const h = encode(ops, m, patches);
        return tf.sum(tf.mul(h, tf.sin(h))) as tf.Scalar;
      }, vars);
      return { v: value.dataSync()[0], g: vars.map((v) => grads[v.name].dataSync()) };
    };
    const a = run(true);
    const b = run(false);
    assert.ok(Math.abs(a.v - b.v) / Math.abs(b.v) < 1e-5);
    a.g.forEach((g, i) => assert.ok(maxRelDiff(g, b.g[i]) < 1e-4, `${store.specs[i].name}: ${maxRelDiff(g, b.g[i])}`));
  });
});
