/**
 * The onnxruntime engine's backward graphs against TF.js autodiff: every op of the model on small
 * random shapes, then a whole I-JEPA step (same weights, batch and masks → same loss and gradients).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import * as ort from 'onnxruntime-node';
import { onBackend, randomArray, tinyModel, relErr } from '../helpers.ts';
import type { Ops } from '../../model/ops.ts';
import type { ParamSpec } from '../../model/vit.ts';
import { encoderSpecs, predictorSpecs } from '../../model/vit.ts';
import { TfOps } from '../../train/tfjs/ops.ts';
import { GraphBuilder } from '../../onnx/graph.ts';
import { OnnxOps } from '../../onnx/ops.ts';
import { gradients } from '../../onnx/autodiff.ts';
import { lossNode } from '../../onnx/training.ts';
import { predictionLoss } from '../../train/tfjs/loss.ts';
import type { LossKind } from '../../model/objective.ts';
import { ParamStore } from '../../model/params.ts';
import { TfjsEngine } from '../../train/tfjs/engine.ts';
import { OrtEngine } from '../../train/ort/engine.ts';
import { tailPositions, tokenRows } from '../../train/engine.ts';
import { defaultMaskConfig, sampleMasks } from '../../train/masks.ts';
import { Rng } from '../../model/rng.ts';
import { gridOf } from '../../model/presets.ts';

const D = tinyModel.dim;

interface Input {
  shape: number[];
  /** Integer index input with these values (not differentiated). */
  ints?: number[];
}

interface Case {
  name: string;
  inputs: Record<string, Input>;
  params?: ParamSpec[];
  f: <T>(ops: Ops<T>, x: Record<string, T>) => T;
  /**
   * The ONNX side is fed host-computed index inputs for these int inputs, as the training graphs
   * are: token rows (with the tokens per image) or tail positions (with the total length).
   */
  fed?: { rows?: Record<string, number>; tail?: Record<string, number> };
}

const p = (name: string, shape: number[]): ParamSpec => ({
  name,
  shape,
  init: { kind: 'trunc', std: 0.5 },
  decay: true,
});

const CASES: Case[] = [
  {
    name: 'linear (MatMul + Add)',
    inputs: { x: { shape: [2, 5, 6] } },
    params: [p('w', [6, 4]), p('b', [4])],
    f: (o, x) => o.linear(x.x, 'w', 'b'),
  },
  {
    name: 'layerNorm with affine',
    inputs: { x: { shape: [2, 3, 8] } },
    params: [p('g', [8]), p('b', [8])],
    f: (o, x) => o.layerNorm(x.x, 1e-6, 'g', 'b'),
  },
  {
    name: 'batchNorm (batch statistics) with affine',
    inputs: { x: { shape: [6, 8] } },
    params: [p('g', [8]), p('b', [8])],
    f: (o, x) => o.batchNorm(x.x, 1e-5, 'g', 'b'),
  },
  { name: 'relu', inputs: { x: { shape: [3, 7] } }, f: (o, x) => o.relu(x.x) },
  { name: 'layerNorm without affine', inputs: { x: { shape: [3, 4, D] } }, f: (o, x) => o.layerNorm(x.x, 1e-6) },
  { name: 'gelu (erf)', inputs: { x: { shape: [4, 7] } }, f: (o, x) => o.gelu(o.scale(x.x, 3)) },
  { name: 'softmax', inputs: { x: { shape: [2, 2, 3, 5] } }, f: (o, x) => o.softmax(o.scale(x.x, 4)) },
  {
    name: 'add, scale, addScalar',
    inputs: { a: { shape: [3, 4] }, b: { shape: [3, 4] } },
    f: (o, x) => o.addScalar(o.scale(o.add(x.a, o.add(x.a, x.b)), 1.5), 2),
  },
  {
    name: 'mask-token insertion (broadcast add of a [1,1,P] parameter)',
    inputs: { x: { shape: [3, 2, 5] } },
    params: [p('t', [1, 1, 5])],
    f: (o, x) => o.add(o.param('t'), x.x),
  },
  {
    name: 'batched matmul (attention)',
    inputs: { a: { shape: [2, 3, 4, 5] }, b: { shape: [2, 3, 5, 6] } },
    f: (o, x) => o.matmul(x.a, x.b),
  },
  {
    name: 'matmul with a transposed operand (q·kᵀ)',
    inputs: { q: { shape: [2, 2, 4, 3] }, k: { shape: [2, 2, 4, 3] } },
    f: (o, x) => o.matmul(x.q, o.transpose(x.k, [0, 1, 3, 2])),
  },
  {
    name: 'reshape and transpose (merge heads)',
    inputs: { x: { shape: [2, 3, 4, 5] } },
    f: (o, x) => o.reshape(o.transpose(x.x, [0, 2, 1, 3]), [0, 0, 15]),
  },
  { name: 'mergeHeads', inputs: { x: { shape: [2, 3, 4, 5] } }, f: (o, x) => o.mergeHeads(x.x, 3) },
  {
    name: 'concat (context | queries)',
    inputs: { a: { shape: [2, 3, 4] }, b: { shape: [2, 2, 4] } },
    f: (o, x) => o.concat([x.a, x.b], 1),
  },
  {
    name: 'splitHeads (q|k|v split)',
    inputs: { x: { shape: [2, 3, 12] } },
    f: (o, x) => {
      const [q, k, v] = o.splitHeads(x.x, 2);
      return o.add(o.add(q, o.scale(k, 2)), o.scale(v, -3));
    },
  },
  {
    name: 'lastTokens (slice)',
    inputs: { x: { shape: [2, 6, 3] }, like: { shape: [2, 2], ints: [0, 0, 0, 0] } },
    f: (o, x) => o.lastTokens(x.x, x.like),
  },
  { name: 'repeatBatch', inputs: { x: { shape: [2, 3, 4] } }, f: (o, x) => o.repeatBatch(x.x, 3) },
  // Padding repeats an index: the gradient must add both rows' contributions.
  {
    name: 'gatherTokens (context selection, repeated indices)',
    inputs: { x: { shape: [2, 5, D] }, idx: { shape: [2, 4], ints: [0, 2, 4, 4, 1, 1, 3, 0] } },
    f: (o, x) => o.gatherTokens(x.x, x.idx),
  },
  {
    name: 'gatherTokens with fed token rows (GatherND)',
    inputs: { x: { shape: [2, 5, D] }, idx: { shape: [2, 4], ints: [0, 2, 4, 4, 1, 1, 3, 0] } },
    f: (o, x) => o.gatherTokens(x.x, x.idx),
    fed: { rows: { idx: 5 } },
  },
  {
    name: 'lastTokens with fed tail positions (GatherND)',
    inputs: { x: { shape: [2, 6, 3] }, like: { shape: [2, 2], ints: [0, 0, 0, 0] } },
    f: (o, x) => o.lastTokens(x.x, x.like),
    fed: { tail: { like: 6 } },
  },
  {
    name: 'gatherRows of a parameter table',
    inputs: { idx: { shape: [2, 3], ints: [0, 2, 2, 1, 3, 0] } },
    params: [p('tab', [4, 5])],
    f: (o, x) => o.gatherRows(o.param('tab'), x.idx),
  },
];

function inputValues(c: Case): Map<string, Float32Array | Int32Array> {
  const out = new Map<string, Float32Array | Int32Array>();
  let seed = 11;
  for (const [k, v] of Object.entries(c.inputs)) {
    out.set(
      k,
      v.ints
        ? Int32Array.from(v.ints)
        : randomArray(
            v.shape.reduce((a, b) => a * b, 1),
            seed++,
          ),
    );
  }
  for (const s of c.params ?? [])
    out.set(
      s.name,
      randomArray(
        s.shape.reduce((a, b) => a * b, 1),
        seed++,
        0.7,
      ),
    );
  return out;
}

/** TF.js: y, and d(Σ y·r)/d(every float input and parameter). */
function tfReference(c: Case, values: Map<string, Float32Array | Int32Array>) {
  const names: string[] = [];
  const res = tf.tidy(() => {
    const vars = new Map<string, tf.Variable>();
    const ints = new Map<string, tf.Tensor>();
    for (const [k, v] of Object.entries(c.inputs)) {
      if (v.ints) ints.set(k, tf.tensor(values.get(k)!, v.shape, 'int32'));
      else vars.set(k, tf.variable(tf.tensor(values.get(k)!, v.shape), true, `in/${k}`));
    }
    for (const s of c.params ?? [])
      vars.set(s.name, tf.variable(tf.tensor(values.get(s.name)!, s.shape), true, `p/${s.name}`));
    const ops = new TfOps((n) => vars.get(n)!);
    const xs = Object.fromEntries(Object.keys(c.inputs).map((k) => [k, (vars.get(k) ?? ints.get(k))!]));
    const y = c.f(ops, xs);
    const r = tf.tensor(randomArray(y.size, 99), y.shape);
    const { grads } = tf.variableGrads(() => tf.sum(tf.mul(c.f(ops, xs), r)) as tf.Scalar, [...vars.values()]);
    names.push(...vars.keys());
    const out = {
      yShape: y.shape,
      r: r.dataSync() as Float32Array,
      grads: names.map((k) => grads[(c.inputs[k] ? 'in/' : 'p/') + k].dataSync() as Float32Array),
    };
    tf.dispose([...vars.values()]);
    return out;
  });
  return { ...res, grads: new Map(names.map((k, i) => [k, res.grads[i]])) };
}

async function ortGradients(
  c: Case,
  values: Map<string, Float32Array | Int32Array>,
  r: Float32Array,
  yShape: number[],
) {
  const g = new GraphBuilder('op_check');
  const xs: Record<string, string> = {};
  for (const [k, v] of Object.entries(c.inputs)) xs[k] = g.input(k, v.ints ? 'int64' : 'float32', v.shape);
  const fedFeeds: Record<string, ort.Tensor> = {};
  const indices = { rows: {} as Record<string, string>, tail: {} as Record<string, string> };
  for (const [k, n] of Object.entries(c.fed?.rows ?? {})) {
    const shape = [...c.inputs[k].shape, 1];
    indices.rows[k] = g.input(`${k}_rows`, 'int64', shape);
    fedFeeds[`${k}_rows`] = new ort.Tensor(
      'int64',
      tokenRows(values.get(k) as Int32Array, c.inputs[k].shape[1], n),
      shape,
    );
  }
  for (const [k, total] of Object.entries(c.fed?.tail ?? {})) {
    const len = c.inputs[k].shape[1];
    indices.tail[k] = g.input(`${k}_tail`, 'int64', [len, 1]);
    fedFeeds[`${k}_tail`] = new ort.Tensor('int64', tailPositions(total, len), [len, 1]);
  }
  const ops = new OnnxOps(g, { prefix: 'p/', specs: c.params ?? [] }, tinyModel, c.fed ? indices : undefined);
  const y = c.f(ops, xs);
  const loss = g.op('ReduceSum', [g.op('Mul', [y, g.initializer('r', r, yShape)])], { keepdims: 0 });
  const wrt = [...Object.keys(c.inputs).filter((k) => !c.inputs[k].ints), ...ops.used];
  const grads = gradients(g, loss, wrt);
  for (const w of wrt) g.output(grads.get(w)!, `d/${w}`, 'float32', g.dims.get(w)!);
  const session = await ort.InferenceSession.create(g.toBytes());
  const feeds: Record<string, ort.Tensor> = { ...fedFeeds };
  for (const [k, v] of Object.entries(c.inputs)) {
    const data = values.get(k)!;
    feeds[k] = v.ints
      ? new ort.Tensor(
          'int64',
          BigInt64Array.from(data, (n) => BigInt(n)),
          v.shape,
        )
      : new ort.Tensor('float32', data as Float32Array, v.shape);
  }
  for (const s of c.params ?? [])
    feeds[`p/${s.name}`] = new ort.Tensor('float32', values.get(s.name) as Float32Array, s.shape);
  const out = await session.run(feeds);
  await session.release();
  return new Map(wrt.map((w) => [w.replace(/^p\//, ''), out[`d/${w}`].data as Float32Array]));
}

for (const c of CASES) {
  test(`gradient rule matches TF.js autodiff: ${c.name}`, async () => {
    const values = inputValues(c);
    const ref = await onBackend('cpu', () => tfReference(c, values));
    const got = await ortGradients(c, values, ref.r, ref.yShape);
    assert.deepEqual([...got.keys()].sort(), [...ref.grads.keys()].sort());
    for (const [k, dk] of ref.grads) {
      const e = relErr(got.get(k)!, dk);
      assert.ok(e <= 1e-4, `d/${k}: relative error ${e}`);
    }
  });
}

for (const kind of ['mse', 'smooth-l1'] as LossKind[]) {
  test(`loss and its gradient match TF.js: ${kind} (mean, not sum)`, async () => {
    const shape = [3, 4, 5];
    const pred = randomArray(60, 1, 2);
    const target = randomArray(60, 2, 2);
    const ref = await onBackend('cpu', () =>
      tf.tidy(() => {
        const t = tf.tensor(target, shape);
        const v = tf.variable(tf.tensor(pred, shape), true, 'pred');
        const { value, grads } = tf.variableGrads(() => predictionLoss(v, t, kind), [v]);
        const out = { loss: value.dataSync()[0], grad: grads.pred.dataSync() as Float32Array };
        v.dispose();
        return out;
      }),
    );
    const g = new GraphBuilder('loss_check');
    const loss = lossNode(g, g.input('pred', 'float32', shape), g.input('target', 'float32', shape), kind);
    g.output(loss, 'loss', 'float32', []);
    g.output(gradients(g, loss, ['pred']).get('pred')!, 'd', 'float32', shape);
    const s = await ort.InferenceSession.create(g.toBytes());
    const out = await s.run({
      pred: new ort.Tensor('float32', pred, shape),
      target: new ort.Tensor('float32', target, shape),
    });
    await s.release();
    assert.ok(Math.abs((out.loss.data as Float32Array)[0] - ref.loss) <= 1e-6 * Math.max(1, ref.loss));
    assert.ok(relErr(out.d.data as Float32Array, ref.grad) <= 1e-4);
  });
}

test('autodiff refuses an op it has no rule for, naming it', () => {
  const g = new GraphBuilder('bad');
  const x = g.input('x', 'float32', [2]);
  assert.throws(
    () => gradients(g, g.op('ReduceSum', [g.op('Sigmoid', [x])], { keepdims: 0 }), ['x']),
    /no gradient rule for Sigmoid/,
  );
});

const stepCases: [LossKind, number, number, boolean][] = [
  ['mse', 0, 1, false],
  ['smooth-l1', 0, 1, false],
  ['mse', 0.5, 1, false],
  ['smooth-l1', 0, 2, false],
  ['smooth-l1', 0.5, 1, true],
];
for (const [kind, sigregWeight, targetLayers, view] of stepCases) {
  test(`whole I-JEPA step (${kind}${sigregWeight ? ' + SIGReg' : ''}${targetLayers > 1 ? `, targets from ${targetLayers} blocks` : ''}${view ? ', target view' : ''}): onnxruntime engine = TF.js engine on the same weights, batch and masks`, async () => {
    const m = tinyModel;
    const specs = [...encoderSpecs(m), ...predictorSpecs(m)];
    const online = ParamStore.init(specs, 3, 'init');
    // Non-default norms/biases everywhere, and a target that differs from the online encoder.
    for (let i = 0; i < online.data.length; i++) online.data[i] += 0.01 * Math.sin(i * 0.7);
    const target = new ParamStore(encoderSpecs(m), online.data.slice(0, new ParamStore(encoderSpecs(m)).size));
    for (let i = 0; i < target.data.length; i++) target.data[i] += 0.01 * Math.cos(i);
    const batch = 6;
    const masks = sampleMasks(Rng.for(1, 'm', 0), gridOf(m), batch, defaultMaskConfig);
    assert.ok(Math.min(...masks.ctxCount) < masks.ctxLen, 'the batch has padded contexts');
    const plain = { patches: randomArray(batch * 16 * 48, 9), batch, masks };
    // Chunks of 4 sort the 6 images by context length: the view must travel with its image.
    const mb = view
      ? {
          ...plain,
          targetView: { patches: randomArray(batch * 16 * 48, 10), flipped: Uint8Array.from([1, 0, 1, 1, 0, 0]) },
        }
      : plain;

    const tfStep = (layers: number, grads: Float32Array, batchIn: typeof mb = mb) =>
      onBackend('cpu', () => {
        const e = new TfjsEngine(m, online, target, {
          loss: kind,
          sigregWeight,
          sigregProjections: 8,
          seed: 1,
          chunk: 4,
          targetLayers: layers,
        });
        const r = { step: e.forwardBackward(batchIn, grads, 0.5, 3), probe: e.probe(batchIn) };
        e.dispose();
        return r;
      });
    const gTf = new Float32Array(online.size);
    const ref = await tfStep(targetLayers, gTf);
    const gOrt = new Float32Array(online.size);
    const engine = await OrtEngine.create(m, online, target, {
      loss: kind,
      numTargets: masks.numTargets,
      chunk: 4,
      threads: 1,
      sigreg: { weight: sigregWeight, projections: 8, seed: 1 },
      targetLayers,
      targetView: view,
    });
    const got = await engine.forwardBackward(mb, gOrt, 0.5, 3);
    const probe = await engine.probe(mb);
    await engine.dispose();

    assert.ok(Math.abs(got.loss - ref.step.loss) <= 1e-5 * ref.step.loss, `loss ${got.loss} vs ${ref.step.loss}`);
    assert.ok(
      Math.abs(got.sigreg - ref.step.sigreg) <= 1e-5 * Math.max(1, ref.step.sigreg),
      `sigreg ${got.sigreg} vs ${ref.step.sigreg}`,
    );
    if (sigregWeight) assert.ok(ref.step.sigreg > 0 && got.loss > got.predLoss, 'SIGReg contributes to the loss');
    for (const s of specs) {
      const o = online.offsets.get(s.name)!;
      const n = online.sizes.get(s.name)!;
      const e = relErr(gOrt.subarray(o, o + n), gTf.subarray(o, o + n));
      assert.ok(e <= 1e-4, `grad ${s.name}: relative error ${e}`);
    }
    assert.ok(relErr(probe.tokens, ref.probe.tokens) <= 1e-4);
    assert.ok(relErr(probe.pooled, ref.probe.pooled) <= 1e-4);
    assert.ok(Math.abs(probe.zeroLoss - ref.probe.zeroLoss) <= 1e-5);
    if (targetLayers > 1) {
      const single = (await tfStep(1, new Float32Array(online.size))).step.predLoss;
      assert.ok(
        Math.abs(got.predLoss - single) > 1e-4 * single,
        `averaged targets change the loss (10× the engines' tolerance) (${got.predLoss} vs ${single})`,
      );
    }
    if (view) {
      const without = (await tfStep(targetLayers, new Float32Array(online.size), plain)).step.predLoss;
      assert.ok(
        Math.abs(got.predLoss - without) > 1e-4 * without,
        `the targets come from the view (${got.predLoss} vs ${without})`,
      );
    }
  });
}
