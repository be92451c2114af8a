/**
 * npm run bench:gpu — the trainer and the encoder on onnxruntime's WebGPU provider against
 * PyTorch eager on the same GPU and our CPU engine on one core, in one run:
 *  1. I-JEPA step img/s on WebGPU (device-resident state) at vit-tiny (batch 512), vit-small
 *     (128) and vit-base-16 (64), warmed up until the step time is stable;
 *  2. the same steps in PyTorch (bench/gpu/torch_step.py: fp32 with TF32 off, and bf16 autocast),
 *     with the context and target lengths our masks give (python3 with torch, else skipped);
 *  3. our CPU engine on one core at vit-tiny (batch 128, chunks of 32);
 *  4. encoder embedding img/s at vit-tiny: WebGPU (batch 256) vs the CPU server's offline rate
 *     (1 thread, batch 32);
 *  5. with BENCH_CIFAR=<folder of CIFAR-10 class folders>: a short WebGPU pre-training run on it
 *     (BENCH_CIFAR_MIN minutes, default 3) and its validation probe against random-init.
 * Prints one table with the ratios; BENCH_OUT=<file> also writes the numbers as JSON.
 *   BENCH_QUICK=1: small batches and short runs, to check the script on a software adapter.
 *   BENCH_PRESETS (vit-tiny,vit-small,vit-base-16), BENCH_SECONDS (timed seconds per row, 20),
 *   BENCH_PYTHON (python3), BENCH_TORCH_STEP and BENCH_IJEPA (paths, for scripts/bench-gpu.sh's bundles)
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gridOf, presets, type ModelConfig, type PresetName } from '../model/presets.ts';
import { ParamStore } from '../model/params.ts';
import { Rng } from '../model/rng.ts';
import { encoderSpecs, predictorSpecs } from '../model/vit.ts';
import { encoderGraph } from '../onnx/inference.ts';
import { probeDevices } from '../runtime/devices.ts';
import { createSession, Tensor, type Device } from '../runtime/session.ts';
import { AdamW } from '../train/adamw.ts';
import type { Engine, MicroBatch } from '../train/engine.ts';
import { stepFlops } from './flops.ts';
import { defaultMaskConfig, sampleMasks } from '../train/masks.ts';
import { DeviceEngine } from '../train/ort/device.ts';
import { OrtEngine } from '../train/ort/engine.ts';

const quick = process.env.BENCH_QUICK === '1';
const seconds = Number(process.env.BENCH_SECONDS ?? (quick ? 5 : 20));
const presetList = (process.env.BENCH_PRESETS ?? (quick ? 'vit-tiny' : 'vit-tiny,vit-small,vit-base-16')).split(
  ',',
) as PresetName[];
const gpuBatch: Record<PresetName, number> = quick
  ? { 'vit-tiny': 16, 'vit-small': 4, 'vit-base-16': 2 }
  : { 'vit-tiny': 512, 'vit-small': 128, 'vit-base-16': 64 };
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const results: Record<string, unknown> = {};
const log = (s: string) => console.error(s);

const webgpu = probeDevices().find((d) => d.device === 'webgpu')!;
log(`webgpu: ${webgpu.available ? 'available' : 'NOT available'}\n  ${webgpu.detail.join('\n  ')}`);
if (!webgpu.available) process.exit(1);
results.adapter = webgpu.detail;

function microBatch(m: ModelConfig, batch: number, step: number): MicroBatch {
  const rng = Rng.for(1, 'bench', step);
  const per = (m.imageSize / m.patchSize) ** 2 * m.patchSize ** 2 * 3;
  const patches = Float32Array.from({ length: batch * per }, () => rng.normal());
  return { patches, batch, masks: sampleMasks(Rng.for(1, 'masks', step), gridOf(m), batch, defaultMaskConfig) };
}

/**
 * Steps until two in a row are within 10% of each other (shader compilation and allocation warm
 * the first ones), then steps for `seconds` (at least 3): the median step.
 */
async function timeSteps(engine: Engine, adam: AdamW, m: ModelConfig, batch: number, label: string) {
  const batches = [0, 1, 2].map((s) => microBatch(m, batch, s));
  const step = async (s: number) => {
    const t0 = performance.now();
    await engine.accumulate(batches[s % 3], 1, s);
    await engine.update({ lr: 1e-4, weightDecay: 0.05, momentum: 0.996 }, adam);
    return (performance.now() - t0) / 1000;
  };
  let prev = await step(0);
  for (let s = 1; s < 8; s++) {
    const t = await step(s);
    const stable = Math.abs(t - prev) <= 0.1 * prev;
    prev = t;
    if (stable) break;
  }
  const times: number[] = [];
  const end = performance.now() + seconds * 1000;
  while (times.length < 3 || performance.now() < end) times.push(await step(times.length));
  const sec = median(times);
  const flops = median(batches.map((b) => stepFlops(m, b.masks)));
  log(`${label}: ${(batch / sec).toFixed(1)} img/s (${times.length} timed steps)`);
  return {
    imgPerSec: batch / sec,
    secPerStep: sec,
    tflops: flops / sec / 1e12,
    ctxLen: batches[0].masks.ctxLen,
    tgtLen: batches[0].masks.tgtLen,
  };
}

function state(m: ModelConfig) {
  const online = ParamStore.init([...encoderSpecs(m), ...predictorSpecs(m)], 0, 'init');
  const target = new ParamStore(encoderSpecs(m), online.data.slice(0, new ParamStore(encoderSpecs(m)).size));
  return { online, target, adam: new AdamW(online.size, online.decayMask()) };
}

const engineOptions = {
  loss: 'smooth-l1' as const,
  numTargets: defaultMaskConfig.numTargets,
  sigreg: { weight: 0.1, projections: 64, seed: 0 },
};

/** PyTorch's step on this machine, or null without python3 + torch. */
function torchStep(m: ModelConfig, batch: number, ctx: number, tgt: number, precision: 'fp32' | 'bf16') {
  const args = [
    process.env.BENCH_TORCH_STEP ?? join(import.meta.dirname, 'gpu/torch_step.py'),
    ...Object.entries({
      dim: m.dim,
      depth: m.depth,
      heads: m.heads,
      'pred-dim': m.predDim,
      'pred-depth': m.predDepth,
      'pred-heads': m.predHeads,
      image: m.imageSize,
      patch: m.patchSize,
      batch,
      ctx,
      tgt,
      targets: defaultMaskConfig.numTargets,
      seconds,
    }).flatMap(([k, v]) => [`--${k}`, String(v)]),
    '--precision',
    precision,
  ];
  const r = spawnSync(process.env.BENCH_PYTHON ?? 'python3', args, { encoding: 'utf8', timeout: 600_000 });
  const line = r.stdout?.trim().split('\n').at(-1);
  if (r.status !== 0 || !line) {
    log(`PyTorch ${precision}: not run (${(r.stderr ?? r.error?.message ?? '').trim().split('\n').at(-1)})`);
    return null;
  }
  const out = JSON.parse(line) as { imgPerSec: number; device: string; gpu: string | null };
  log(`PyTorch ${precision} on ${out.gpu ?? out.device}: ${out.imgPerSec.toFixed(1)} img/s`);
  return out;
}

const rows: string[][] = [];
const steps: Record<string, unknown> = {};
for (const name of presetList) {
  const m = presets[name];
  const b = gpuBatch[name];
  const s = state(m);
  const engine = await DeviceEngine.create(m, s.online, s.target, s.adam, {
    ...engineOptions,
    device: 'webgpu',
  });
  const gpu = await timeSteps(engine, s.adam, m, b, `${name} step, WebGPU, batch ${b}`);
  await engine.dispose();
  const fp32 = torchStep(m, b, gpu.ctxLen, gpu.tgtLen, 'fp32');
  const bf16 = torchStep(m, b, gpu.ctxLen, gpu.tgtLen, 'bf16');
  steps[name] = { batch: b, webgpu: gpu, torchFp32: fp32, torchBf16: bf16 };
  const ratio = (x: { imgPerSec: number } | null) => (x ? (gpu.imgPerSec / x.imgPerSec).toFixed(2) : '-');
  rows.push([
    `${name} step, batch ${b}`,
    gpu.imgPerSec.toFixed(1),
    gpu.tflops.toFixed(2),
    fp32 ? fp32.imgPerSec.toFixed(1) : '-',
    bf16 ? bf16.imgPerSec.toFixed(1) : '-',
    ratio(fp32),
    ratio(bf16),
  ]);
}
results.steps = steps;

// Our CPU engine on one core, vit-tiny.
const tiny = presets['vit-tiny'];
const cpuBatch = quick ? 32 : 128;
const cs = state(tiny);
const cpuEngine = await OrtEngine.create(tiny, cs.online, cs.target, { ...engineOptions, chunk: 32, threads: 1 });
const cpu = await timeSteps(
  cpuEngine,
  cs.adam,
  tiny,
  cpuBatch,
  `vit-tiny step, CPU engine, 1 thread, batch ${cpuBatch}`,
);
await cpuEngine.dispose();
results.cpuStep = cpu;

// Embeddings: the encoder on WebGPU at a large batch vs the CPU server's offline configuration.
async function embedRate(device: Device, batch: number, threads: number) {
  const session = await createSession(encoderGraph(tiny, ParamStore.init(encoderSpecs(tiny), 0, 'init')), {
    device,
    threads,
  });
  const images = new Tensor(
    'float32',
    Float32Array.from({ length: batch * 3 * 32 * 32 }, (_, i) => Math.sin(i)),
    [batch, 3, 32, 32],
  );
  for (let i = 0; i < 3; i++) await session.run({ images });
  const times: number[] = [];
  const end = performance.now() + seconds * 1000;
  while (times.length < 3 || performance.now() < end) {
    const t0 = performance.now();
    await session.run({ images });
    times.push((performance.now() - t0) / 1000);
  }
  await session.release();
  const rate = batch / median(times);
  log(`embeddings, vit-tiny, ${device}, batch ${batch}: ${rate.toFixed(0)} img/s`);
  return rate;
}
const embedGpu = await embedRate('webgpu', quick ? 64 : 256, 1);
const embedCpu = await embedRate('cpu', 32, 1);
results.embeddings = { webgpu: embedGpu, cpu: embedCpu };

// A short pre-training run on CIFAR-10 and its validation probe against random-init.
const cifar = process.env.BENCH_CIFAR;
let cifarRow: string[] | null = null;
if (cifar) {
  const out = join('runs', `bench-gpu-cifar-${Date.now()}`);
  const cli = (args: string[]) => {
    const ijepa = process.env.BENCH_IJEPA ?? join(import.meta.dirname, '../bin/ijepa.js');
    const r = spawnSync(process.execPath, [ijepa, ...args], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    if (r.status !== 0) throw new Error(`ijepa ${args[0]} failed`);
    return r.stdout;
  };
  const minutes = process.env.BENCH_CIFAR_MIN ?? '3';
  const summary = JSON.parse(
    cli([
      'train',
      '--data',
      cifar,
      '--out',
      out,
      '--device',
      'webgpu',
      '--holdout',
      '--time-budget',
      minutes,
      '--batch',
      quick ? '32' : '512',
      '--plain',
    ]),
  ) as { imagesSeen: number; elapsedSec: number };
  cli(['export', '--run', out, '--out', join(out, 'model')]);
  cli([
    'eval',
    '--model',
    join(out, 'model'),
    '--data',
    cifar,
    '--validation',
    '--readout',
    'grid4',
    '--limit',
    quick ? '500' : '5000',
    '--no-knn',
    '--device',
    'webgpu',
    '--out',
    out,
  ]);
  const evalRows = JSON.parse(readFileSync(join(out, 'eval.json'), 'utf8')).rows as {
    kind: string;
    accuracy: number;
  }[];
  const acc = (kind: string) => evalRows.find((r) => r.kind === kind)?.accuracy;
  const [ours, random] = [acc('ijepa'), acc('random-init')];
  results.cifar = { minutes, ...summary, validationGrid4: ours, randomInitGrid4: random };
  cifarRow = [
    `CIFAR-10, ${minutes} min on WebGPU`,
    `${summary.imagesSeen} images`,
    ours !== undefined ? (100 * ours).toFixed(2) : '-',
    random !== undefined ? (100 * random).toFixed(2) : '-',
  ];
}

const fmt = (r: string[]) => `| ${r.join(' | ')} |`;
console.log('\nI-JEPA step (WebGPU, state resident on the device) vs PyTorch eager on the same GPU; medians\n');
console.log(
  fmt([
    'step',
    'WebGPU img/s',
    'WebGPU TFLOP/s',
    'PyTorch fp32 img/s',
    'PyTorch bf16 img/s',
    'WebGPU ÷ fp32',
    'WebGPU ÷ bf16',
  ]),
);
console.log(fmt(Array(7).fill('---')));
for (const r of rows) console.log(fmt(r));
console.log('\n| measurement | value | ratio | target |\n| --- | --- | --- | --- |');
const tinyGpu = (steps['vit-tiny'] as { webgpu: { imgPerSec: number } } | undefined)?.webgpu.imgPerSec;
if (tinyGpu)
  console.log(
    fmt([
      'vit-tiny step, WebGPU ÷ our CPU engine on 1 core',
      `${tinyGpu.toFixed(1)} / ${cpu.imgPerSec.toFixed(1)} img/s`,
      `${(tinyGpu / cpu.imgPerSec).toFixed(1)}×`,
      '≥ 50×',
    ]),
  );
const base = steps['vit-base-16'] as
  | { webgpu: { imgPerSec: number }; torchFp32: { imgPerSec: number } | null }
  | undefined;
if (base?.torchFp32)
  console.log(
    fmt([
      'vit-base-16 step, WebGPU ÷ PyTorch fp32',
      `${base.webgpu.imgPerSec.toFixed(1)} / ${base.torchFp32.imgPerSec.toFixed(1)} img/s`,
      `${(base.webgpu.imgPerSec / base.torchFp32.imgPerSec).toFixed(2)}×`,
      '≥ 0.5×',
    ]),
  );
console.log(
  fmt([
    'vit-tiny embeddings, WebGPU ÷ CPU server offline (1 thread, batch 32)',
    `${embedGpu.toFixed(0)} / ${embedCpu.toFixed(0)} img/s`,
    `${(embedGpu / embedCpu).toFixed(1)}×`,
    '≥ 20×',
  ]),
);
if (cifarRow)
  console.log(`\n| run | seen | validation grid4 | random-init grid4 |\n| --- | --- | --- | --- |\n${fmt(cifarRow)}`);
if (process.env.BENCH_OUT) writeFileSync(process.env.BENCH_OUT, JSON.stringify(results, null, 2));
