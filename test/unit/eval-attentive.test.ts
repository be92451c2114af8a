/** The attentive probe: its graph's loss and gradients against TF.js, and what it can read that pooling cannot. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import * as ort from 'onnxruntime-node';
import { onBackend, randomArray, relErr } from '../helpers.ts';
import {
  attentiveGraph,
  attentiveParams,
  fitAndScoreAttentive,
  type AttentiveShape,
  type Tokens,
} from '../../eval/attentive.ts';
import { fitAndScore } from '../../eval/probe.ts';
import { Rng } from '../../model/rng.ts';

/**
 * The textbook cross-attention in TF.js, unfolded: keys K = X·Wk + bk and values V = X·Wv + bv
 * for every token, scores K_h·q_h / √dh, softmax over the tokens, Σ a·V per head, layer norm,
 * linear classifier, mean cross-entropy. The key bias is a parameter here and not in the graph:
 * it shifts every score of a head alike, so its gradient must be zero and the rest unchanged.
 */
function reference(s: AttentiveShape, b: number, values: Map<string, Float32Array>, labels: number[]) {
  const { tokens: n, dim: d, heads: h, classes: c } = s;
  const dh = d / h;
  return tf.tidy(() => {
    const x = tf.tensor(values.get('x')!, [b, n, d]);
    const y = tf.oneHot(tf.tensor1d(labels, 'int32'), c);
    const { params } = attentiveParams(s);
    const shapes: [string, number[]][] = [...params.map((q): [string, number[]] => [q.name, q.shape]), ['bk', [d]]];
    const vars = Object.fromEntries(
      shapes.map(([name, shape]) => [name, tf.variable(tf.tensor(values.get(name)!, shape), true, name)]),
    );
    const f = () => {
      const x2 = tf.reshape(x, [b * n, d]);
      const k = tf.reshape(tf.add(tf.matMul(x2, vars.wk), vars.bk), [b, n, h, dh]);
      const scores = tf.div(tf.sum(tf.mul(k, tf.reshape(vars.query, [1, 1, h, dh])), -1), Math.sqrt(dh));
      const a = tf.softmax(tf.transpose(scores, [0, 2, 1])); // [b, h, n]
      const v = tf.transpose(tf.reshape(tf.add(tf.matMul(x2, vars.wv), vars.bv), [b, n, h, dh]), [0, 2, 1, 3]);
      const out = tf.reshape(tf.matMul(tf.reshape(a, [b, h, 1, n]), v), [b, d]);
      const { mean, variance } = tf.moments(out, -1, true);
      const normed = tf.add(
        tf.mul(tf.div(tf.sub(out, mean), tf.sqrt(tf.add(variance, 1e-6))), vars.norm_g),
        vars.norm_b,
      );
      const logits = tf.add(tf.matMul(normed, vars.wc), vars.bc);
      return tf.neg(tf.mean(tf.sum(tf.mul(y, tf.logSoftmax(logits)), -1))) as tf.Scalar;
    };
    const { value, grads } = tf.variableGrads(f);
    const out = {
      loss: value.dataSync() as Float32Array,
      grads: Object.fromEntries(Object.entries(grads).map(([k, g]) => [k, g.dataSync() as Float32Array])),
    };
    for (const v of Object.values(vars)) v.dispose();
    return out;
  });
}

test('attentive probe: the graph (folded keys and values) has the loss and gradients of the unfolded cross-attention in TF.js', async () => {
  const s: AttentiveShape = { tokens: 5, dim: 6, heads: 2, classes: 3 };
  const b = 4;
  const labels = [0, 2, 1, 2];
  const values = new Map<string, Float32Array>();
  let seed = 3;
  values.set('x', randomArray(b * s.tokens * s.dim, seed++, 1.5));
  for (const q of attentiveParams(s).params) values.set(q.name, randomArray(q.size, seed++, 0.8));
  values.set('bk', randomArray(s.dim, seed++, 0.8));
  const ref = await onBackend('cpu', () => reference(s, b, values, labels));

  const session = await ort.InferenceSession.create(attentiveGraph(s, true));
  const onehot = new Float32Array(b * s.classes);
  labels.forEach((l, i) => (onehot[i * s.classes + l] = 1));
  const feeds: Record<string, ort.Tensor> = {
    x: new ort.Tensor('float32', values.get('x')!, [b, s.tokens, s.dim]),
    y: new ort.Tensor('float32', onehot, [b, s.classes]),
  };
  for (const q of attentiveParams(s).params) feeds[q.name] = new ort.Tensor('float32', values.get(q.name)!, q.shape);
  const out = await session.run(feeds);
  await session.release();

  const loss = ref.loss[0];
  assert.ok(Math.abs((out.loss.data as Float32Array)[0] - loss) <= 1e-5 * Math.max(1, loss));
  assert.ok(Math.max(...ref.grads.bk.map(Math.abs)) < 1e-5, 'the key bias does not change the loss');
  for (const q of attentiveParams(s).params) {
    const e = relErr(out[`d/${q.name}`].data as Float32Array, ref.grads[q.name]);
    assert.ok(e <= 1e-4, `d/${q.name}: relative error ${e}`);
  }
});

/**
 * One token per class, at shuffled positions, carries that class's one-hot in the first C values;
 * one of them is marked (value 1 in the next) and its class is the label. Every image holds the
 * same tokens in another order, so mean pooling sees the same vector up to the noise: a pooled
 * probe is at chance, and only attention to the marked token can tell the classes apart.
 */
function markedToken(n: number, seed: number): { tokens: Tokens; pooled: Float32Array } {
  const c = 4;
  const len = 8;
  const d = 8;
  const rng = Rng.for(seed, 'marked-token');
  const x = new Float32Array(n * len * d);
  const y = new Int32Array(n);
  const pooled = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    y[i] = rng.int(c);
    const where = rng.permutation(len);
    for (let k = 0; k < c; k++) {
      const at = (i * len + where[k]) * d;
      x[at + k] = 1;
      if (k === y[i]) x[at + c] = 1;
    }
    for (let t = 0; t < len; t++)
      for (let j = 0; j < d; j++) {
        const at = (i * len + t) * d + j;
        x[at] += 0.1 * rng.normal();
        pooled[i * d + j] += x[at] / len;
      }
  }
  return { tokens: { x, y, n }, pooled };
}

test('attentive probe reads a token whose position varies, which a linear probe on the mean-pooled tokens cannot', async () => {
  const s: AttentiveShape = { tokens: 8, dim: 8, heads: 2, classes: 4 };
  const tr = markedToken(600, 1);
  const te = markedToken(300, 2);
  const pooled = await fitAndScore(
    { x: tr.pooled, y: tr.tokens.y, n: tr.tokens.n, skipped: 0 },
    { x: te.pooled, y: te.tokens.y, n: te.tokens.n, skipped: 0 },
    s.dim,
    s.classes,
    'auto',
    200,
  );
  assert.ok(pooled.report.accuracy < 0.4, `mean-pooled linear probe ${pooled.report.accuracy} (chance 0.25)`);
  const att = await fitAndScoreAttentive(tr.tokens, te.tokens, s, {
    grid: { lr: [1e-2], weightDecay: [0.01] },
    epochs: 30,
    batch: 32,
    threads: 1,
  });
  assert.ok(att.report.accuracy > 0.9, `attentive probe ${att.report.accuracy}`);
});

test('attentive probe: its learning rate and weight decay are chosen without reading the scored split', async () => {
  const s: AttentiveShape = { tokens: 8, dim: 8, heads: 2, classes: 4 };
  const tr = markedToken(200, 3).tokens;
  const te = markedToken(100, 4).tokens;
  const flipped = { ...te, y: te.y.map((v) => (v + 1) % 4) };
  const o = { grid: { lr: [1e-3, 1e-2], weightDecay: [0.01, 0.3] }, epochs: 4, batch: 32, threads: 1 };
  const a = await fitAndScoreAttentive(tr, te, s, o);
  const b = await fitAndScoreAttentive(tr, flipped, s, o);
  assert.equal(a.selection.length, 4);
  assert.deepEqual(a.selection, b.selection);
  assert.deepEqual([a.lr, a.weightDecay], [b.lr, b.weightDecay]);
  const best = Math.max(...a.selection.map((x) => x.accuracy));
  assert.equal(a.selection.find((x) => x.accuracy === best)!.lr, a.lr);
});
