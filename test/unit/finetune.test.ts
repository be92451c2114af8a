/**
 * Fine-tuning: the onnxruntime step (loss and every gradient) against TF.js written the direct way
 * (encoder, token mean, linear head, cross-entropy on smoothed targets); layer-wise learning-rate
 * decay in AdamW; a resumed run ends with the weights of an uninterrupted one.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import sharp from 'sharp';
import { onBackend, randomArray, relErr, tinyModel } from '../helpers.ts';
import { tempDir } from '../tmp.ts';
import { makePackage } from '../http/fixtures.ts';
import { encode, encoderSpecs } from '../../model/vit.ts';
import { TfOps } from '../../train/tfjs/ops.ts';
import { ParamStore } from '../../model/params.ts';
import { AdamW } from '../../train/adamw.ts';
import { readCheckpoint } from '../../train/checkpoint.ts';
import { createSession, Tensor } from '../../runtime/session.ts';
import { GRAD, ONLINE } from '../../onnx/training.ts';
import { HEAD_B, HEAD_W, finetuneGraph, finetuneSpecs } from '../../finetune/graph.ts';
import { layerScales } from '../../finetune/layers.ts';
import { FINETUNE_CHECKPOINT, initialParams, runFinetune, smoothTargets } from '../../finetune/finetune.ts';

const m = tinyModel;
const C = 3;
const B = 4;

function params(): ParamStore {
  const p = ParamStore.init(finetuneSpecs(m, C), 3, 'init');
  for (let i = 0; i < p.data.length; i++) p.data[i] += 0.01 * Math.sin(i * 0.7);
  // A head large enough that the encoder's gradients are not vanishingly small.
  p.view(HEAD_W).set(randomArray(m.dim * C, 9, 0.3));
  p.view(HEAD_B).set([0.1, -0.2, 0.05]);
  return p;
}

test('the fine-tuning step: loss and every gradient equal TF.js written directly (label smoothing 0.1, the head on the standardised pooled embedding)', async () => {
  const p = params();
  const images = randomArray(B * 3 * m.imageSize * m.imageSize, 4, 1.5);
  const targets = smoothTargets([0, 2, 1, 2], C, 0.1, new Float32Array(B * C));
  const session = await createSession(finetuneGraph(m, C, true), { threads: 1 });
  const featMean = randomArray(m.dim, 12, 0.5);
  const featStd = Float32Array.from(randomArray(m.dim, 13, 0.4), (v) => 0.5 + Math.abs(v));
  const feeds: Record<string, Tensor> = {
    images: new Tensor('float32', images, [B, 3, m.imageSize, m.imageSize]),
    targets: new Tensor('float32', targets, [B, C]),
    feat_mean: new Tensor('float32', featMean, [m.dim]),
    feat_std: new Tensor('float32', featStd, [m.dim]),
  };
  for (const s of p.specs) feeds[ONLINE + s.name] = new Tensor('float32', p.view(s.name), s.shape);
  const out = await session.run(feeds);
  await session.release();

  const ref = await onBackend('cpu', () => {
    const vars = new Map(
      p.specs.map((s) => [s.name, tf.variable(tf.tensor(p.view(s.name), s.shape), true, `v/${s.name}`)]),
    );
    const ops = new TfOps((n) => vars.get(n)!, new Map(), false);
    const { value, grads } = tf.variableGrads(() => {
      const x = tf.tensor4d(images, [B, 3, m.imageSize, m.imageSize]);
      const pooled = tf.mean(encode(ops, m, ops.patchify(x, m.patchSize)), 1);
      const standardised = tf.div(tf.sub(pooled, tf.tensor1d(featMean)), tf.tensor1d(featStd));
      const logits = ops.linear(standardised, HEAD_W, HEAD_B);
      const t = tf.tensor2d(targets, [B, C]);
      return tf.neg(tf.mean(tf.sum(tf.mul(t, tf.logSoftmax(logits)), 1))) as tf.Scalar;
    }, [...vars.values()]);
    const r = {
      loss: value.dataSync()[0],
      grads: new Map(p.specs.map((s) => [s.name, grads[`v/${s.name}`].dataSync() as Float32Array])),
    };
    tf.dispose([value, ...vars.values(), ...Object.values(grads)]);
    return r;
  });
  const loss = (out.loss.data as Float32Array)[0];
  assert.ok(Math.abs(loss - ref.loss) / Math.abs(ref.loss) < 1e-5, `loss ${loss} vs ${ref.loss}`);
  for (const s of p.specs) {
    const e = relErr(out[GRAD + s.name].data as Float32Array, ref.grads.get(s.name)!);
    assert.ok(e < 1e-3, `${s.name}: relative error ${e}`);
  }
});

test('layer-wise decay: block 0 steps at decay^depth · lr, the patch embedding at decay^(depth+1), the head at lr; decoupled decay scaled alike', () => {
  const specs = finetuneSpecs(m, C);
  const decay = 0.5;
  const p0 = new ParamStore(specs, randomArray(new ParamStore(specs).size, 7, 1));
  const scales = layerScales(p0, m, decay)!;
  const lr = 1e-2;
  const expect = (name: string) => {
    if (name.startsWith('encoder.patch.')) return decay ** (m.depth + 1);
    if (name.startsWith('encoder.blocks.0.')) return decay ** m.depth;
    if (name.startsWith('encoder.blocks.1.')) return decay ** (m.depth - 1);
    return 1;
  };
  // The first Adam update is lr · sign(g) (bias-corrected, |g| ≫ eps): the scale shows directly.
  const p = p0.clone();
  const grad = Float32Array.from(p.data, (_, i) => (i % 2 ? 0.5 : -0.25));
  new AdamW(p.size, new Uint8Array(p.size), undefined, scales).step(p.data, grad, lr, 0);
  for (const s of specs) {
    const want = expect(s.name) * lr;
    const got = p0.view(s.name).map((v, i) => Math.abs(v - p.view(s.name)[i]));
    for (const d of got)
      assert.ok(Math.abs(d - want) < 1e-6 * Math.max(1, want / 1e-6), `${s.name}: step ${d}, want ${want}`);
  }
  // With no gradient, only the decoupled decay moves the weights: p · (1 − lr · wd · scale).
  const q = p0.clone();
  new AdamW(q.size, q.decayMask(), undefined, scales).step(q.data, new Float32Array(q.size), lr, 0.1);
  const w = 'encoder.blocks.0.mlp.fc1.w';
  const want = p0.view(w)[5] * (1 - lr * 0.1 * expect(w));
  assert.ok(Math.abs(q.view(w)[5] - want) < 1e-7, `decayed ${q.view(w)[5]}, want ${want}`);
  assert.equal(layerScales(p0, m, 1), undefined);
});

/** Class folders of small solid-ish PNGs: three classes told apart by colour. */
async function labeledFolder(): Promise<string> {
  const dir = tempDir('ijepa-ft-data-');
  const colours = { red: [200, 30, 30], green: [30, 200, 30], blue: [30, 30, 200] } as const;
  for (const [name, rgb] of Object.entries(colours)) {
    mkdirSync(join(dir, name));
    for (let i = 0; i < 8; i++) {
      const px = Buffer.alloc(16 * 16 * 3);
      for (let j = 0; j < px.length; j++)
        px[j] = Math.max(0, Math.min(255, rgb[j % 3] + ((j * 37 + i * 11) % 40) - 20));
      await sharp(px, { raw: { width: 16, height: 16, channels: 3 } })
        .png()
        .toFile(join(dir, name, `${i}.png`));
    }
  }
  return dir;
}

test('a resumed fine-tuning run ends with the weights, moments and step of an uninterrupted one', async () => {
  const model = makePackage(false, { id: 'tiny-ft-src' });
  const data = await labeledFolder();
  const root = tempDir('ijepa-ft-out-');
  const common = {
    model,
    data,
    validation: true,
    epochs: 3,
    batch: 4,
    warmupEpochs: 1,
    threads: 1,
    checkpointEvery: 3,
    log: () => {},
  };
  const whole = await runFinetune({ ...common, out: join(root, 'whole') });
  const cut = join(root, 'cut');
  await assert.rejects(
    runFinetune({
      ...common,
      out: cut,
      onStep: (s) => {
        if (s === 7) throw new Error('killed');
      },
    }),
    /killed/,
  );
  assert.equal((readCheckpoint(join(cut, FINETUNE_CHECKPOINT)).meta.state as { step: number }).step, 6);
  await assert.rejects(runFinetune({ ...common, out: cut }), /--resume/);
  const resumed = await runFinetune({ ...common, out: cut, resume: true });
  assert.equal(resumed.steps, whole.steps);
  assert.equal(whole.steps, 3 * Math.floor(20 / 4));
  const a = readCheckpoint(join(root, 'whole', FINETUNE_CHECKPOINT));
  const b = readCheckpoint(join(cut, FINETUNE_CHECKPOINT));
  for (const k of ['params', 'm', 'v']) assert.deepEqual(b.arrays.get(k), a.arrays.get(k), k);
  assert.equal(resumed.accuracy, whole.accuracy);
  await assert.rejects(runFinetune({ ...common, out: cut }), /already holds a model package/);
});

test("a random init is eval's random-init encoder for the same seed, with a head of std 2e-5 and zero bias", () => {
  const p = initialParams(m, C, 5);
  const enc = ParamStore.init(encoderSpecs(m), 5, 'random-init');
  assert.deepEqual(p.data.subarray(0, enc.size), enc.data);
  const w = p.view(HEAD_W);
  assert.ok(w.some((v) => v !== 0) && w.every((v) => Math.abs(v) < 1e-4));
  assert.ok(p.view(HEAD_B).every((v) => v === 0));
});
