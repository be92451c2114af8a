/**
 * Objective `views` (LeJEPA's signal): the onnxruntime step against a TF.js reference written the
 * direct way (each view's distance from its image's mean embedding), the loader's views, and
 * colour jitter.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { maxRelDiff, onBackend, randomArray, tinyModel } from '../helpers.ts';
import { encode, encoderSpecs, project, projectorSpecs, PROJECTOR_DIM } from '../../model/vit.ts';
import { TfOps } from '../../train/tfjs/ops.ts';
import { sigreg } from '../../train/tfjs/loss.ts';
import { sigregDirections } from '../../model/objective.ts';
import { ParamStore } from '../../model/params.ts';
import { OrtEngine } from '../../train/ort/engine.ts';
import { defaultMaskConfig, sampleMasks } from '../../train/masks.ts';
import { gridOf } from '../../model/presets.ts';
import { Rng } from '../../model/rng.ts';

const m = tinyModel;
const V = 3;
const batch = 4;
const per = 16 * 48;

function reference(online: ParamStore, views: Float32Array, weight: number) {
  return onBackend('cpu', () => {
    const vars = new Map(
      [...encoderSpecs(m), ...projectorSpecs(m)].map((s) => [
        s.name,
        tf.variable(tf.tensor(online.view(s.name), s.shape), true, `v/${s.name}`),
      ]),
    );
    const ops = new TfOps((n) => vars.get(n)!);
    const dirs = tf.tensor2d(sigregDirections(PROJECTOR_DIM, 8, 1, 3), [PROJECTOR_DIM, 8]);
    let parts: { dis: number; sig: number } = { dis: 0, sig: 0 };
    const { value, grads } = tf.variableGrads(() => {
      const z = project(ops, tf.mean(encode(ops, m, tf.tensor3d(views, [batch * V, 16, 48])), 1)) as tf.Tensor2D;
      const byImage = tf.reshape(z, [batch, V, PROJECTOR_DIM]);
      const centre = tf.mean(byImage, 1, true);
      // mean over images and views of ‖z_v − c‖², per dimension
      const dis = tf.mean(tf.square(tf.sub(byImage, centre)));
      const sig = tf.mean(tf.stack(tf.unstack(byImage, 1).map((zv) => sigreg(zv as tf.Tensor2D, dirs))));
      parts = { dis: dis.dataSync()[0], sig: sig.dataSync()[0] };
      return tf.add(dis, tf.mul(sig, weight)) as tf.Scalar;
    }, [...vars.values()]);
    const out = {
      loss: value.dataSync()[0],
      ...parts,
      grads: new Map([...vars.keys()].map((k) => [k, grads[`v/${k}`].dataSync() as Float32Array])),
    };
    tf.dispose([value, dirs, ...vars.values(), ...Object.values(grads)]);
    return out;
  });
}

async function ortStep(online: ParamStore, views: Float32Array, weight: number) {
  const target = new ParamStore(encoderSpecs(m), online.data.slice(0, new ParamStore(encoderSpecs(m)).size));
  const engine = await OrtEngine.create(m, online, target, {
    loss: 'mse',
    numTargets: 4,
    threads: 1,
    sigreg: { weight, projections: 8, seed: 1 },
    views: V,
  });
  const grad = new Float32Array(online.size);
  const masks = sampleMasks(Rng.for(1, 'm', 0), gridOf(m), batch, defaultMaskConfig);
  const r = await engine.forwardBackward({ patches: views.subarray(0, batch * per), batch, masks, views }, grad, 1, 3);
  await engine.dispose();
  return { ...r, grad };
}

const online_ = (seed: number) => ParamStore.init([...encoderSpecs(m), ...projectorSpecs(m)], seed, 'init');

test('views step: onnxruntime loss parts and encoder + projector gradients = TF.js written the direct way', async () => {
  const online = online_(3);
  for (let i = 0; i < online.data.length; i++) online.data[i] += 0.01 * Math.sin(i * 0.7);
  const views = randomArray(batch * V * per, 5);
  const ref = await reference(online, views, 0.5);
  const got = await ortStep(online, views, 0.5);
  assert.ok(ref.dis > 0 && ref.sig > 0);
  assert.ok(Math.abs(got.predLoss - ref.dis) <= 1e-4 * ref.dis, `disagreement ${got.predLoss} vs ${ref.dis}`);
  assert.ok(Math.abs(got.sigreg - ref.sig) <= 1e-5 * ref.sig, `sigreg ${got.sigreg} vs ${ref.sig}`);
  assert.ok(Math.abs(got.loss - ref.loss) <= 1e-5 * ref.loss);
  for (const [name, g] of ref.grads) {
    const o = online.offsets.get(name)!;
    const e = maxRelDiff(got.grad.subarray(o, o + g.length), g);
    assert.ok(e <= 1e-3, `grad ${name}: relative error ${e}`);
  }
  assert.equal(ref.grads.size, online.specs.length);
});

test('views step: identical views disagree by nothing; the same views paired with other images do', async () => {
  const online = online_(4);
  const one = randomArray(batch * per, 6);
  const same = new Float32Array(batch * V * per);
  for (let b = 0; b < batch; b++)
    for (let v = 0; v < V; v++) same.set(one.subarray(b * per, (b + 1) * per), (b * V + v) * per);
  const agreed = (await ortStep(online, same, 0.5)).predLoss;
  // Layout [B, V, …]: reading it as [V, B, …] would pair views of different images.
  const shuffled = new Float32Array(same.length);
  for (let b = 0; b < batch; b++)
    for (let v = 0; v < V; v++)
      shuffled.set(same.subarray((b * V + v) * per, (b * V + v + 1) * per), (v * batch + b) * per);
  const mixed = (await ortStep(online, shuffled, 0.5)).predLoss;
  assert.ok(agreed <= 1e-6 * mixed, `identical views ${agreed}, views of different images ${mixed}`);
});
