/**
 * Objective `mae`: random masking, and the step's loss and gradients — onnxruntime against the
 * TF.js engine and against the loss written directly (normalised pixels of the masked patches,
 * mean squared error over them and nothing else).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { onBackend, randomArray, relErr, tinyModel } from '../helpers.ts';
import { decode, decoderSpecs, encode, encoderSpecs } from '../../model/vit.ts';
import { TfOps } from '../../train/tfjs/ops.ts';
import { TfjsEngine } from '../../train/tfjs/engine.ts';
import { OrtEngine } from '../../train/ort/engine.ts';
import { ParamStore } from '../../model/params.ts';
import { sampleRandomMasks, type MaskBatch } from '../../train/masks.ts';
import { predictorKeyMask } from '../../train/engine.ts';
import { Rng } from '../../model/rng.ts';

const m = tinyModel; // 16 px, patch 4: a 4×4 grid
const grid = { rows: 4, cols: 4 };
const N = 16;
const pc = 48;
const batch = 4;

test('random masks: each image keeps round(N·(1 − ratio)) patches, hides the rest, seeded, different per image', () => {
  const a = sampleRandomMasks(Rng.for(3, 'm'), grid, 64, 0.75);
  assert.equal(a.ctxLen, 4);
  assert.equal(a.tgtLen, 12);
  assert.equal(a.numTargets, 1);
  assert.ok(a.ctxMask.every((v) => v === 1));
  const seen = new Set<string>();
  for (let b = 0; b < a.batch; b++) {
    const ctx = [...a.ctxIdx.subarray(b * 4, b * 4 + 4)];
    const tgt = [...a.tgtIdx.subarray(b * 12, b * 12 + 12)];
    assert.deepEqual(
      [...ctx, ...tgt].sort((x, y) => x - y),
      [...Array(N).keys()],
    );
    seen.add(ctx.join());
  }
  assert.ok(seen.size > 48, `only ${seen.size} distinct visible sets of 64`);
  assert.deepEqual(sampleRandomMasks(Rng.for(3, 'm'), grid, 64, 0.75), a);
  assert.equal(sampleRandomMasks(Rng.for(3, 'm'), grid, 2, 0.5).ctxLen, 8);
  // Never nothing to see, never nothing to predict.
  assert.equal(sampleRandomMasks(Rng.for(3, 'm'), grid, 1, 0.999).ctxLen, 1);
  assert.equal(sampleRandomMasks(Rng.for(3, 'm'), grid, 1, 0.001).tgtLen, 1);
});

function perturbed(seed: number): ParamStore {
  const p = ParamStore.init([...encoderSpecs(m), ...decoderSpecs(m)], seed, 'init');
  for (let i = 0; i < p.data.length; i++) p.data[i] += 0.02 * Math.sin(i * 0.7);
  return p;
}

const targetOf = (online: ParamStore) =>
  new ParamStore(encoderSpecs(m), online.data.slice(0, new ParamStore(encoderSpecs(m)).size));

async function ortStep(online: ParamStore, patches: Float32Array, masks: MaskBatch, chunk = 2) {
  const engine = await OrtEngine.create(m, online, targetOf(online), {
    loss: 'smooth-l1',
    numTargets: 1,
    threads: 1,
    chunk,
    objective: 'mae',
  });
  const grad = new Float32Array(online.size);
  const r = await engine.forwardBackward({ patches, batch: masks.batch, masks }, grad, 1, 0);
  await engine.dispose();
  return { ...r, grad };
}

/**
 * MAE's loss written directly: each masked patch's pixels standardised in float64 on the host
 * ((x − mean) / √(var + 1e-6)), the decoder's prediction at the masked positions, their mean
 * squared difference.
 */
function directLoss(online: ParamStore, patches: Float32Array, k: MaskBatch) {
  const target = new Float32Array(batch * k.tgtLen * pc);
  for (let b = 0; b < batch; b++)
    for (let t = 0; t < k.tgtLen; t++) {
      const src = patches.subarray(
        (b * N + k.tgtIdx[b * k.tgtLen + t]) * pc,
        (b * N + k.tgtIdx[b * k.tgtLen + t] + 1) * pc,
      );
      let mean = 0;
      for (const v of src) mean += v / pc;
      let v2 = 0;
      for (const v of src) v2 += (v - mean) ** 2 / pc;
      for (let i = 0; i < pc; i++) target[(b * k.tgtLen + t) * pc + i] = (src[i] - mean) / Math.sqrt(v2 + 1e-6);
    }
  return onBackend('cpu', () => {
    const vars = new Map(
      online.specs.map((s) => [s.name, tf.variable(tf.tensor(online.view(s.name), s.shape), true, `v/${s.name}`)]),
    );
    const ops = new TfOps((n) => vars.get(n)!, new Map(), false);
    const ctxIdx = tf.tensor2d(k.ctxIdx, [batch, k.ctxLen], 'int32');
    const { value, grads } = tf.variableGrads(() => {
      const visible = encode(ops, m, tf.tensor3d(patches, [batch, N, pc]), {
        idx: ctxIdx,
        mask: tf.tensor2d(k.ctxMask, [batch, k.ctxLen]),
      });
      const pred = decode(ops, m, {
        context: visible,
        ctxIdx,
        keyMask: tf.tensor2d(predictorKeyMask(k), [batch, k.ctxLen + k.tgtLen]),
        tgtIdx: tf.tensor2d(k.tgtIdx, [batch, k.tgtLen], 'int32'),
      });
      return tf.mean(tf.square(tf.sub(pred, tf.tensor3d(target, [batch, k.tgtLen, pc])))) as tf.Scalar;
    }, [...vars.values()]);
    const grad = new Float32Array(online.size);
    for (const s of online.specs) grad.set(grads[`v/${s.name}`].dataSync() as Float32Array, online.offsets.get(s.name));
    const out = { loss: value.dataSync()[0], grad };
    tf.dispose([value, ...vars.values(), ...Object.values(grads)]);
    return out;
  });
}

const patches = randomArray(batch * N * pc, 11, 2);
const masks = sampleRandomMasks(Rng.for(1, 'mae'), grid, batch, 0.75);

function assertGradsClose(online: ParamStore, got: Float32Array, ref: Float32Array, what: string) {
  for (const s of online.specs) {
    const o = online.offsets.get(s.name)!;
    const n = online.sizes.get(s.name)!;
    const e = relErr(got.subarray(o, o + n), ref.subarray(o, o + n));
    assert.ok(e <= 1e-3, `${what}: grad ${s.name}: relative error ${e}`);
  }
}

test('mae step: loss and every encoder + decoder gradient = the loss written directly (TF.js autodiff)', async () => {
  const online = perturbed(5);
  const ref = await directLoss(online, patches, masks);
  const got = await ortStep(online, patches, masks);
  assert.ok(ref.loss > 0.5, `loss ${ref.loss}`);
  assert.ok(Math.abs(got.loss - ref.loss) <= 1e-5 * ref.loss, `loss ${got.loss} vs ${ref.loss}`);
  assert.equal(got.predLoss, got.loss);
  assert.equal(got.sigreg, 0);
  assertGradsClose(online, got.grad, ref.grad, 'onnxruntime');
});

test('mae step: the TF.js engine and the onnxruntime engine agree (chunked differently)', async () => {
  const online = perturbed(6);
  const grad = new Float32Array(online.size);
  const tfjs = await onBackend('cpu', () => {
    const e = new TfjsEngine(m, online, targetOf(online), {
      loss: 'smooth-l1',
      sigregWeight: 0,
      sigregProjections: 8,
      seed: 1,
      chunk: 3,
      objective: 'mae',
    });
    const r = e.forwardBackward({ patches, batch, masks }, grad, 1, 0);
    e.dispose();
    return r;
  });
  const ort = await ortStep(online, patches, masks, 4);
  assert.ok(Math.abs(ort.loss - tfjs.loss) <= 1e-5 * tfjs.loss, `loss ${ort.loss} vs ${tfjs.loss}`);
  assertGradsClose(online, ort.grad, grad, 'TF.js engine');
});

test('mae loss: a masked patch counts by its normalised pixels only; visible patches are inputs, not targets', async () => {
  const online = perturbed(7);
  const base = (await ortStep(online, patches, masks)).loss;
  const edited = (f: (patch: Float32Array) => void, b: number, idx: number) => {
    const p = patches.slice();
    f(p.subarray((b * N + idx) * pc, (b * N + idx + 1) * pc));
    return p;
  };
  const hidden = masks.tgtIdx[0];
  const shown = masks.ctxIdx[0];
  // Scaling and shifting a hidden patch leaves its normalised pixels, so the loss, unchanged...
  const affine = edited((q) => q.forEach((v, i) => (q[i] = 3 * v + 0.5)), 0, hidden);
  const same = (await ortStep(online, affine, masks)).loss;
  assert.ok(Math.abs(same - base) <= 1e-5 * base, `affine change of a hidden patch moved the loss ${base} → ${same}`);
  // ...its pattern changes it...
  const pattern = edited((q) => q.reverse(), 0, hidden);
  assert.ok(Math.abs((await ortStep(online, pattern, masks)).loss - base) > 1e-4 * base);
  // ...and a visible patch, scaled the same way, changes what the encoder sees, not a target: the
  // loss moves by the decoder's change alone, which the direct loss (masked targets only) matches.
  const visible = edited((q) => q.forEach((v, i) => (q[i] = 3 * v + 0.5)), 0, shown);
  const moved = (await ortStep(online, visible, masks)).loss;
  const ref = (await directLoss(online, visible, masks)).loss;
  assert.ok(Math.abs(moved - ref) <= 1e-5 * ref, `${moved} vs ${ref}`);
});
