/**
 * Objectives `lejepa` and `hybrid`: the onnxruntime steps against TF.js written the direct way
 * (LeJEPA's Algorithm 1: every view's projection against the mean of the image's global views,
 * SIGReg per view, (1 − λ)·invariance + λ·SIGReg), with local views on their own coarser grid.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { maxRelDiff, onBackend, randomArray, tinyModel } from '../helpers.ts';
import {
  encode,
  encoderSpecs,
  predictorSpecs,
  project,
  projectorSpecs,
  PROJECTOR_DIM,
  type ViewGrid,
} from '../../model/vit.ts';
import { TfOps } from '../../train/tfjs/ops.ts';
import { TfjsEngine } from '../../train/tfjs/engine.ts';
import { sigreg } from '../../train/tfjs/loss.ts';
import { sigregDirections } from '../../model/objective.ts';
import { ParamStore } from '../../model/params.ts';
import { OrtEngine } from '../../train/ort/engine.ts';
import { defaultMaskConfig, sampleMasks, type MaskBatch } from '../../train/masks.ts';
import { gridOf } from '../../model/presets.ts';
import { Rng } from '../../model/rng.ts';
import { sincos2d } from '../../model/posembed.ts';

const m = tinyModel; // 16 px, patch 4: 4×4 global grid
const Vg = 2;
const Vl = 3;
const batch = 4;
const pc = 48;
const per = 16 * pc;
const localGrid: ViewGrid = { rows: 2, cols: 2 };
const perLocal = 4 * pc;
const layout = { globals: Vg, locals: Vl, localGrid };
const P = 8;
const STEP = 3;

/** LeJEPA's loss written directly: z [B, V, K] with the global views first. */
function lejepaLoss(z: tf.Tensor3D, lambda: number) {
  const centre = tf.mean(tf.slice(z, [0, 0, 0], [-1, Vg, -1]), 1, true);
  const invariance = tf.mean(tf.square(tf.sub(centre, z)));
  const dirs = tf.tensor2d(sigregDirections(PROJECTOR_DIM, P, 1, STEP), [PROJECTOR_DIM, P]);
  const sig = tf.mean(tf.stack(tf.unstack(z, 1).map((zv) => sigreg(zv as tf.Tensor2D, dirs))));
  return { invariance, sig, loss: tf.add(tf.mul(invariance, 1 - lambda), tf.mul(sig, lambda)) as tf.Scalar };
}

/** Gradients of `f` by TF.js autodiff, with the loss parts it reports. */
function tfGrads(online: ParamStore, f: (ops: TfOps) => { loss: tf.Scalar; invariance: tf.Tensor; sig: tf.Tensor }) {
  return onBackend('cpu', () => {
    const vars = new Map(
      online.specs.map((s) => [s.name, tf.variable(tf.tensor(online.view(s.name), s.shape), true, `v/${s.name}`)]),
    );
    const ops = new TfOps((n) => vars.get(n)!, new Map(), false);
    let parts = { invariance: 0, sig: 0 };
    const { value, grads } = tf.variableGrads(() => {
      const r = f(ops);
      parts = { invariance: r.invariance.dataSync()[0], sig: r.sig.dataSync()[0] };
      return r.loss;
    }, [...vars.values()]);
    const grad = new Float32Array(online.size);
    // Parameters the function does not use (the hybrid's predictor) get no gradient here.
    for (const s of online.specs) {
      const d = grads[`v/${s.name}`];
      if (d) grad.set(d.dataSync() as Float32Array, online.offsets.get(s.name));
    }
    const out = { loss: value.dataSync()[0], ...parts, grad };
    tf.dispose([value, ...vars.values(), ...Object.values(grads)]);
    return out;
  });
}

const pooled = (t: tf.Tensor) => tf.mean(t, 1) as tf.Tensor2D;

/** z [B, Vg + Vl, K] of pooled global [B·Vg, D] and local [B·Vl, D] embeddings, projected together. */
function projectViews(ops: TfOps, g: tf.Tensor2D, l: tf.Tensor2D): tf.Tensor3D {
  const z = project(ops, tf.concat([g, l], 0)) as tf.Tensor2D;
  const [zg, zl] = tf.split(z, [batch * Vg, batch * Vl], 0);
  return tf.concat([tf.reshape(zg, [batch, Vg, -1]), tf.reshape(zl, [batch, Vl, -1])], 1) as tf.Tensor3D;
}

function perturbed(specs: Parameters<typeof ParamStore.init>[0], seed: number): ParamStore {
  const p = ParamStore.init(specs, seed, 'init');
  for (let i = 0; i < p.data.length; i++) p.data[i] += 0.01 * Math.sin(i * 0.7);
  return p;
}

const targetOf = (online: ParamStore) =>
  new ParamStore(encoderSpecs(m), online.data.slice(0, new ParamStore(encoderSpecs(m)).size));

async function ortStep(
  objective: 'lejepa' | 'hybrid',
  online: ParamStore,
  mb: { patches: Float32Array; batch: number; masks: MaskBatch; views: Float32Array; locals: Float32Array },
  lambda: number,
  target = targetOf(online),
) {
  const engine = await OrtEngine.create(m, online, target, {
    loss: 'smooth-l1',
    numTargets: mb.masks.numTargets,
    threads: 1,
    chunk: 2,
    sigreg: { weight: lambda, projections: P, seed: 1 },
    objective,
    views: layout,
  });
  const grad = new Float32Array(online.size);
  const r = await engine.forwardBackward(mb, grad, 1, STEP);
  await engine.dispose();
  return { ...r, grad };
}

function assertClose(
  got: { loss: number; predLoss: number; sigreg: number; grad: Float32Array },
  ref: ReturnType<typeof tfGrads> extends Promise<infer R> ? R : never,
  online: ParamStore,
  predLoss = ref.invariance,
) {
  assert.ok(ref.invariance > 0 && ref.sig > 0);
  assert.ok(Math.abs(got.sigreg - ref.sig) <= 1e-5 * ref.sig, `sigreg ${got.sigreg} vs ${ref.sig}`);
  assert.ok(Math.abs(got.predLoss - predLoss) <= 1e-4 * predLoss, `first term ${got.predLoss} vs ${predLoss}`);
  assert.ok(Math.abs(got.loss - ref.loss) <= 1e-5 * ref.loss, `loss ${got.loss} vs ${ref.loss}`);
  for (const s of online.specs) {
    const o = online.offsets.get(s.name)!;
    const n = online.sizes.get(s.name)!;
    const e = maxRelDiff(got.grad.subarray(o, o + n), ref.grad.subarray(o, o + n));
    assert.ok(e <= 1e-3, `grad ${s.name}: relative error ${e}`);
  }
}

const views = randomArray(batch * Vg * per, 5);
const locals = randomArray(batch * Vl * perLocal, 6);
const masks = sampleMasks(Rng.for(1, 'm', 0), gridOf(m), batch * Vg, defaultMaskConfig);

test('lejepa step: loss parts and encoder + projector gradients = TF.js written the direct way', async () => {
  const online = perturbed([...encoderSpecs(m), ...projectorSpecs(m)], 3);
  const ref = await tfGrads(online, (ops) => {
    const g = pooled(encode(ops, m, tf.tensor3d(views, [batch * Vg, 16, pc])));
    const l = pooled(encode(ops, m, tf.tensor3d(locals, [batch * Vl, 4, pc]), undefined, localGrid));
    return lejepaLoss(projectViews(ops, g, l), 0.02);
  });
  const got = await ortStep(
    'lejepa',
    online,
    { patches: views.subarray(0, batch * per), batch, masks, views, locals },
    0.02,
  );
  assertClose(got, ref, online);
});

test('hybrid step: prediction loss (TF.js engine) + LeJEPA on the pooled context and the local views = onnxruntime', async () => {
  const online = perturbed([...encoderSpecs(m), ...predictorSpecs(m), ...projectorSpecs(m)], 4);
  const target = targetOf(online);
  for (let i = 0; i < target.data.length; i++) target.data[i] += 0.01 * Math.cos(i);
  const mb = { patches: views, batch: batch * Vg, masks, views, locals };
  // The prediction term's gradient from the reference engine (whose own SIGReg is off)...
  const predOnly = new ParamStore(
    [...encoderSpecs(m), ...predictorSpecs(m)],
    online.data.slice(0, new ParamStore([...encoderSpecs(m), ...predictorSpecs(m)]).size),
  );
  const predGrad = new Float32Array(predOnly.size);
  const pred = await onBackend('cpu', () => {
    const e = new TfjsEngine(m, predOnly, target, {
      loss: 'smooth-l1',
      sigregWeight: 0,
      sigregProjections: P,
      seed: 1,
    });
    const r = e.forwardBackward({ patches: views, batch: batch * Vg, masks }, predGrad, 1, STEP);
    e.dispose();
    return r;
  });
  // ...plus LeJEPA's on the key-masked mean of the context tokens of each global view.
  const ref = await tfGrads(online, (ops) => {
    const ctxMask = tf.tensor2d(masks.ctxMask, [masks.batch, masks.ctxLen]);
    const context = encode(ops, m, tf.tensor3d(views, [batch * Vg, 16, pc]), {
      idx: tf.tensor2d(masks.ctxIdx, [masks.batch, masks.ctxLen], 'int32'),
      mask: ctxMask,
    });
    const w = tf.expandDims(ctxMask, 2);
    const g = tf.div(tf.sum(tf.mul(context, w), 1), tf.sum(w, 1)) as tf.Tensor2D;
    const l = pooled(encode(ops, m, tf.tensor3d(locals, [batch * Vl, 4, pc]), undefined, localGrid));
    return lejepaLoss(projectViews(ops, g, l), 0.1);
  });
  for (let i = 0; i < predGrad.length; i++) ref.grad[i] += predGrad[i];
  ref.loss += pred.predLoss;
  const got = await ortStep('hybrid', online, mb, 0.1, target);
  assertClose(got, ref, online, pred.predLoss);
});

test('lejepa: identical views agree exactly; the same views paired with other images do not', async () => {
  const online = perturbed([...encoderSpecs(m), ...projectorSpecs(m)], 7);
  const one = randomArray(batch * per, 8);
  const same = new Float32Array(batch * Vg * per);
  for (let b = 0; b < batch; b++)
    for (let v = 0; v < Vg; v++) same.set(one.subarray(b * per, (b + 1) * per), (b * Vg + v) * per);
  const noLocals = { ...layout, locals: 0 };
  const run = async (v: Float32Array) => {
    const engine = await OrtEngine.create(m, online, targetOf(online), {
      loss: 'mse',
      numTargets: 4,
      threads: 1,
      sigreg: { weight: 0.02, projections: P, seed: 1 },
      objective: 'lejepa',
      views: noLocals,
    });
    const r = await engine.forwardBackward({ patches: v, batch, masks, views: v }, new Float32Array(online.size), 1, 0);
    await engine.dispose();
    return r.predLoss;
  };
  const agreed = await run(same);
  // Layout [B, V, …]: reading it as [V, B, …] would pair views of different images.
  const shuffled = new Float32Array(same.length);
  for (let b = 0; b < batch; b++)
    for (let v = 0; v < Vg; v++)
      shuffled.set(same.subarray((b * Vg + v) * per, (b * Vg + v + 1) * per), (v * batch + b) * per);
  const mixed = await run(shuffled);
  assert.ok(agreed <= 1e-6 * mixed, `identical views ${agreed}, views of different images ${mixed}`);
});

test('a local view sits on the global grid where resizing would put it', () => {
  const full = sincos2d(8, 4, 4);
  // A 2×2 view of a 4×4 grid: its cells at 0.5 and 2.5, halfway between the full grid's.
  const coarse = sincos2d(8, 2, 2, { rows: 4, cols: 4 });
  assert.deepEqual(sincos2d(8, 4, 4, { rows: 4, cols: 4 }), full);
  // Column channel 0 is sin(c): at c = 0.5 it lies between sin(0) and sin(1), not at either.
  assert.ok(Math.abs(coarse[0] - Math.sin(0.5)) < 1e-6);
  assert.ok(coarse[0] > full[0] && coarse[0] < full[8]);
});
