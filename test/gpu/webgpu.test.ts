/**
 * onnxruntime's WebGPU provider, on whatever adapter this machine has (CI: Mesa's lavapipe, a
 * software Vulkan driver): no graph falls back to the CPU, a step and the device-resident
 * optimizer equal the CPU engine, checkpoints move between devices, and the server's embeddings
 * agree. Without an adapter these tests are skipped, saying what to install (test/requires.ts), or
 * fail where IJEPA_REQUIRE names webgpu.
 */
import { tempDir } from '../tmp.ts';
import { skipUnless } from '../requires.ts';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { tinyModel, randomArray } from '../helpers.ts';
import { engineOptions as opts, initialState, maxAbsDiff, microBatch, runSteps } from '../steps.ts';
import { placementOf } from './placement.ts';
import { GraphBuilder } from '../../onnx/graph.ts';
import { encoderGraph } from '../../onnx/inference.ts';
import { lejepaGraph, maeGraph, probeGraph, stepGraph } from '../../onnx/training.ts';
import { gapGraph, updateGraph } from '../../onnx/update.ts';
import { ParamStore } from '../../model/params.ts';
import { decoderSpecs, encoderSpecs, predictorSpecs } from '../../model/vit.ts';
import { gridOf } from '../../model/presets.ts';
import { Rng } from '../../model/rng.ts';
import { sampleRandomMasks } from '../../train/masks.ts';
import { identityGraph } from '../../runtime/transfer.ts';
import { probeDevices } from '../../runtime/devices.ts';
import { createSession, Tensor, type Device } from '../../runtime/session.ts';
import { readCheckpoint } from '../../train/checkpoint.ts';
import { AdamW, defaultAdamW } from '../../train/adamw.ts';
import { DeviceEngine } from '../../train/ort/device.ts';
import { OrtEngine, engineGraphs } from '../../train/ort/engine.ts';
import { BatchFeeds } from '../../train/ort/feeds.ts';
import { Service } from '../../serve/service.ts';

const m = tinyModel;
const skip = skipUnless('webgpu');
const dir = tempDir('ijepa-webgpu-');
after(() => rmSync(dir, { recursive: true, force: true }));

test('a WebGPU adapter is present', { skip }, () => {
  const webgpu = probeDevices().find((d) => d.device === 'webgpu')!;
  assert.ok(webgpu.available, `these tests need a WebGPU adapter:\n  ${webgpu.detail.join('\n  ')}`);
});

test('no emitted graph places a node on the CPU under WebGPU (no host round trips inside a step)', {
  skip,
}, async () => {
  const online = [...encoderSpecs(m), ...predictorSpecs(m)];
  const graphs: Record<string, Uint8Array> = {
    'step (MSE)': stepGraph(m, 4, 'mse'),
    'step (smooth-L1, SIGReg, target view, averaged targets, accumulating)': stepGraph(m, 4, 'smooth-l1', {
      sigreg: { weight: 0.1, projections: 8 },
      targetView: true,
      targetLayers: 2,
      accumulate: true,
    }),
    'LeJEPA step with local views (accumulating)': lejepaGraph(
      m,
      { globals: 2, locals: 2, localGrid: { rows: 2, cols: 2 } },
      { weight: 0.02, projections: 8 },
      { accumulate: true },
    ),
    'hybrid step with local views': stepGraph(m, 4, 'smooth-l1', {
      sigreg: { weight: 0.1, projections: 8 },
      views: { globals: 2, locals: 2, localGrid: { rows: 2, cols: 2 } },
    }),
    'MAE step (accumulating)': maeGraph(m, { accumulate: true }),
    diagnostics: probeGraph(m, 4, 'smooth-l1'),
    'AdamW + EMA update': updateGraph(online, encoderSpecs(m), defaultAdamW),
    'EMA gap': gapGraph(encoderSpecs(m)),
    'package encoder': encoderGraph(m, ParamStore.init(encoderSpecs(m), 0, 'init')),
    'device transfer': identityGraph(),
  };
  const onCpu: string[] = [];
  for (const [name, graph] of Object.entries(graphs)) {
    const p = await placementOf(graph);
    for (const [provider, nodes] of Object.entries(p.byProvider))
      if (provider !== 'WebGpuExecutionProvider')
        onCpu.push(`${name}: ${nodes.map((n) => n.op).join(', ')} on ${provider}`);
  }
  assert.deepEqual(onCpu, []);
  // The check sees a fallback where there is one: Sum has no WebGPU kernel.
  const g = new GraphBuilder('sum');
  const x = g.input('x', 'float32', ['n']);
  g.output(g.op('Add', [g.op('Sum', [x, x]), x]), 'y', 'float32', ['n']);
  assert.deepEqual(
    (await placementOf(g.toBytes())).byProvider.CPUExecutionProvider?.map((n) => n.op),
    ['Sum'],
  );
});

/** loss, its parts and every gradient of one step-graph run on a device. */
async function stepOn(device: Device) {
  const state = initialState(m);
  const session = await createSession(engineGraphs(m, opts).step, { device, threads: 1 });
  const weights: Record<string, Tensor> = {};
  for (const [prefix, store] of [
    ['online/', state.online],
    ['target/', state.target],
  ] as const)
    for (const s of store.specs) weights[prefix + s.name] = new Tensor('float32', store.view(s.name), s.shape);
  // One chunk of 6 images: the run's outputs are the step's.
  let out: Record<string, Tensor> = {};
  await new BatchFeeds(m, { ...opts, chunk: 6 }).sumChunks(microBatch(m, 6, 0, 0), 3, async (f) => {
    out = await session.run({ ...f, ...weights });
    return out;
  });
  await session.release();
  return Object.fromEntries(Object.entries(out).map(([k, t]) => [k, t.data as Float32Array]));
}

test('one training step on WebGPU = on the CPU: loss within 1e-5 (relative), every gradient within 1e-4', {
  skip,
}, async (t) => {
  const [cpu, gpu] = [await stepOn('cpu'), await stepOn('webgpu')];
  const rel = (a: number, b: number) => Math.abs(a - b) / Math.abs(b);
  assert.ok(rel(gpu.loss[0], cpu.loss[0]) <= 1e-5, `loss ${gpu.loss[0]} vs ${cpu.loss[0]}`);
  assert.ok(rel(gpu.sigreg[0], cpu.sigreg[0]) <= 1e-5, `SIGReg ${gpu.sigreg[0]} vs ${cpu.sigreg[0]}`);
  const grads = Object.keys(cpu).filter((k) => k.startsWith('grad/'));
  assert.equal(grads.length, initialState(m).online.specs.length);
  let worst = 0;
  for (const k of grads) {
    const scale = Math.max(...cpu[k].map(Math.abs));
    assert.ok(maxAbsDiff(gpu[k], cpu[k]) <= 1e-4 * scale, `${k}: ${maxAbsDiff(gpu[k], cpu[k])} of ${scale}`);
    worst = Math.max(worst, maxAbsDiff(gpu[k], cpu[k]) / scale);
  }
  t.diagnostic(
    `loss ${rel(gpu.loss[0], cpu.loss[0]).toExponential(1)} relative, worst gradient ${worst.toExponential(1)} of its largest entry`,
  );
});

test('an MAE step on WebGPU = on the CPU: loss within 1e-5 (relative), every gradient within 1e-4', {
  skip,
}, async () => {
  const online = ParamStore.init([...encoderSpecs(m), ...decoderSpecs(m)], 3, 'init');
  const target = new ParamStore(encoderSpecs(m), online.data.slice(0, new ParamStore(encoderSpecs(m)).size));
  const n = (m.imageSize / m.patchSize) ** 2;
  const mb = {
    patches: randomArray(6 * n * m.patchSize * m.patchSize * m.channels, 17),
    batch: 6,
    masks: sampleRandomMasks(Rng.for(1, 'mae'), gridOf(m), 6, 0.75),
  };
  const on = async (device: Device) => {
    const engine =
      device === 'cpu'
        ? await OrtEngine.create(m, online, target, { ...maeOpts, threads: 1 })
        : await DeviceEngine.create(m, online, target, new AdamW(online.size, online.decayMask()), {
            ...maeOpts,
            device,
          });
    const r = await engine.accumulate(mb, 1, 0);
    const grad = new Float32Array(online.size);
    if (engine instanceof OrtEngine) grad.set(engine.grad);
    else {
      // The device engine keeps the gradient sum on the device: one update with lr 0 and no decay
      // leaves the weights, and the moments' first update is (1 − β₁)·g.
      const adam = new AdamW(online.size, online.decayMask());
      await engine.update({ lr: 0, weightDecay: 0, momentum: 1 }, adam);
      await engine.pull(adam);
      for (let i = 0; i < grad.length; i++) grad[i] = adam.m[i] / (1 - adam.config.beta1);
    }
    await engine.dispose();
    return { loss: r.loss, grad };
  };
  const maeOpts = { loss: 'mse' as const, numTargets: 1, objective: 'mae' as const, chunk: 6 };
  const cpu = await on('cpu');
  const gpu = await on('webgpu');
  assert.ok(Math.abs(gpu.loss - cpu.loss) <= 1e-5 * cpu.loss, `loss ${gpu.loss} vs ${cpu.loss}`);
  const scale = Math.max(...cpu.grad.map(Math.abs));
  assert.ok(maxAbsDiff(gpu.grad, cpu.grad) <= 1e-4 * scale, `gradients: ${maxAbsDiff(gpu.grad, cpu.grad)} of ${scale}`);
});

test('three steps with weights, moments and the EMA target resident on WebGPU = the CPU engine (within 1e-5)', {
  skip,
}, async (t) => {
  const host = initialState(m);
  const dev = initialState(m);
  const cpu = await OrtEngine.create(m, host.online, host.target, opts);
  const gpu = await DeviceEngine.create(m, dev.online, dev.target, dev.adam, {
    ...opts,
    device: 'webgpu',
  });
  const [lc, lg] = [await runSteps(cpu, host.adam, m, 3, 2), await runSteps(gpu, dev.adam, m, 3, 2)];
  lc.forEach((l, i) => assert.ok(Math.abs(lg[i] - l) <= 1e-5 * l, `step ${i} loss ${lg[i]} vs ${l}`));
  assert.ok(maxAbsDiff(dev.online.data, host.online.data) <= 1e-5, 'online weights');
  assert.ok(maxAbsDiff(dev.target.data, host.target.data) <= 1e-5, 'EMA target');
  assert.ok(maxAbsDiff(dev.adam.m, host.adam.m) <= 1e-5 && maxAbsDiff(dev.adam.v, host.adam.v) <= 1e-5, 'moments');
  assert.ok(maxAbsDiff(dev.online.data, initialState(m).online.data) > 1e-3, 'the weights moved');
  t.diagnostic(
    `losses ${lc.map((l, i) => (Math.abs(lg[i] - l) / l).toExponential(1)).join(', ')} relative; weights ${maxAbsDiff(dev.online.data, host.online.data).toExponential(1)}, EMA ${maxAbsDiff(dev.target.data, host.target.data).toExponential(1)} apart`,
  );
  await Promise.all([cpu.dispose(), gpu.dispose()]);
});

// --- checkpoints across devices, through the CLI ---

const BIN = join(import.meta.dirname, '../../bin/ijepa.js');
const data = join(dir, 'train-images-idx3-ubyte');
{
  const n = 32;
  const head = Buffer.from([0, 0, 0x08, 3, 0, 0, 0, n, 0, 0, 0, 16, 0, 0, 0, 16]);
  const px = Buffer.alloc(n * 256);
  for (let i = 0; i < px.length; i++) px[i] = Math.round(127 + 120 * Math.sin(i / 7) * Math.cos(i / 29));
  writeFileSync(data, Buffer.concat([head, px]));
}
const config = join(dir, 'tiny.json');
writeFileSync(
  config,
  JSON.stringify({
    model: m,
    batch: 8,
    epochs: 10,
    maxSteps: 6,
    checkpointEvery: 1,
    logEvery: 1,
    diagEvery: 3,
    sigreg: { weight: 0.1 },
  }),
);

/** Runs `ijepa train`; with `stopAt`, sends SIGTERM once it logs that step (the run checkpoints and exits). */
function train(out: string, device: Device, extra: string[] = [], stopAt?: number): Promise<void> {
  const args = [
    BIN,
    'train',
    '--data',
    data,
    '--out',
    out,
    '--config',
    config,
    '--recipe',
    'reference',
    '--device',
    device,
    '--threads',
    '1',
    '--plain',
    ...extra,
  ];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  let stopping = false;
  // On the step's log line, not on its checkpoint file: a file polled on a busy machine was seen
  // too late, after the run had finished its steps.
  child.stderr.on('data', (d) => {
    err += d;
    const logged = [...err.matchAll(/step (\d+)\//g)].map((m) => Number(m[1]));
    if (stopAt && !stopping && logged.some((n) => n >= stopAt)) {
      stopping = true;
      child.kill('SIGTERM');
    }
  });
  return new Promise((resolve, reject) =>
    child.on('close', (code) => {
      code === 0 ? resolve() : reject(new Error(`ijepa train --device ${device} exited ${code}:\n${err.slice(-2000)}`));
    }),
  );
}

const finalState = (out: string) => {
  const c = readCheckpoint(join(out, 'checkpoint.bin'));
  return { step: (c.meta.state as { step: number }).step, arrays: c.arrays };
};

test('a run checkpointed on WebGPU resumes on the CPU, and one from the CPU on WebGPU: both reach the uninterrupted run', {
  skip,
}, async () => {
  const whole = join(dir, 'cpu-whole');
  await train(whole, 'cpu');
  for (const [first, second] of [
    ['webgpu', 'cpu'],
    ['cpu', 'webgpu'],
  ] as const) {
    const out = join(dir, `${first}-then-${second}`);
    await train(out, first, [], 2);
    const stopped = finalState(out).step;
    assert.ok(stopped >= 2 && stopped < 6, `${first} run stopped at step ${stopped}`);
    await train(out, second, ['--resume']);
    const [a, b] = [finalState(whole), finalState(out)];
    assert.equal(b.step, 6);
    for (const k of ['online', 'target', 'adam.m', 'adam.v'])
      assert.ok(
        maxAbsDiff(b.arrays.get(k)!, a.arrays.get(k)!) <= 1e-5,
        `${first} → ${second}: ${k} differs by ${maxAbsDiff(b.arrays.get(k)!, a.arrays.get(k)!)}`,
      );
  }
});

test("the server's embeddings on WebGPU = on the CPU (within 1e-4)", { skip }, async (t) => {
  const model = join(import.meta.dirname, '../../models/fmnist-vit-tiny');
  const [cpu, gpu] = [
    await Service.open(model),
    await Service.open(model, { device: 'webgpu', maxBatch: 256, maxWaitMs: 10 }),
  ];
  const images = Array.from({ length: 5 }, (_, i) =>
    Uint8Array.from(randomArray(32 * 32 * 3, i + 1), (v) => Math.round(127 + 127 * v)),
  );
  let worst = 0;
  for (const rgb of images) {
    const [a, b] = [await cpu.batcher.submit(rgb), await gpu.batcher.submit(rgb)];
    assert.ok(maxAbsDiff(b.pooled, a.pooled) <= 1e-4, `pooled differs by ${maxAbsDiff(b.pooled, a.pooled)}`);
    assert.ok(maxAbsDiff(b.tokens, a.tokens) <= 1e-4, `tokens differ by ${maxAbsDiff(b.tokens, a.tokens)}`);
    worst = Math.max(worst, maxAbsDiff(b.tokens, a.tokens));
  }
  t.diagnostic(`tokens at most ${worst.toExponential(1)} apart`);
  await Promise.all([cpu.close(), gpu.close()]);
});
