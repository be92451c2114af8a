/**
 * npm run bench:train — I-JEPA training-step throughput, vit-tiny, batch 128, both engines in one
 * process, interleaved round by round on the same synthetic batches and masks:
 *   onnxruntime on 1 thread and on all threads, TF.js (wasm + our kernels, 1 thread: its wasm
 *   build has no threads in Node), and a chain of MLP-shaped Gemms on 1 thread as the
 *   machine's attainable matmul rate (the ceiling for a step that is ~2/3 Gemm).
 * The table reports medians over rounds and per-round ratios.
 *   BENCH_ROUNDS (3), BENCH_BATCH (128), BENCH_CHUNK (32), BENCH_TFJS (1; 0 skips the slow TF.js rows)
 */
import { availableParallelism } from 'node:os';
import * as ort from 'onnxruntime-node';
import { useBackend } from '../train/tfjs/backend.ts';
import { TfjsEngine } from '../train/tfjs/engine.ts';
import type { MicroBatch } from '../train/engine.ts';
import { OrtEngine } from '../train/ort/engine.ts';
import { defaultMaskConfig, sampleMasks } from '../train/masks.ts';
import { gridOf, presets } from '../model/presets.ts';
import { encoderSpecs, predictorSpecs } from '../model/vit.ts';
import { ParamStore } from '../model/params.ts';
import { Rng } from '../model/rng.ts';
import { stepFlops } from '../train/flops.ts';
import { GraphBuilder } from '../onnx/graph.ts';

const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const batch = Number(process.env.BENCH_BATCH ?? 128);
const chunk = Number(process.env.BENCH_CHUNK ?? 32);
const withTfjs = process.env.BENCH_TFJS !== '0';
const threads = availableParallelism();
const m = presets['vit-tiny'];

const specs = [...encoderSpecs(m), ...predictorSpecs(m)];
const online = ParamStore.init(specs, 0, 'init');
const target = new ParamStore(encoderSpecs(m), online.data.slice(0, new ParamStore(encoderSpecs(m)).size));
const per = (m.imageSize / m.patchSize) ** 2 * m.patchSize ** 2 * 3;
const grad = new Float32Array(online.size);

function microBatch(step: number): MicroBatch {
  const rng = Rng.for(1, 'bench', step);
  const patches = Float32Array.from({ length: batch * per }, () => rng.normal());
  return { patches, batch, masks: sampleMasks(Rng.for(1, 'masks', step), gridOf(m), batch, defaultMaskConfig) };
}

interface Sample {
  sec: number;
  imgs: number;
  gflops: number;
}

async function timed(mb: MicroBatch, f: () => unknown): Promise<Sample> {
  const t0 = performance.now();
  await f();
  const sec = (performance.now() - t0) / 1000;
  return { sec, imgs: mb.batch / sec, gflops: stepFlops(m, mb.masks) / sec / 1e9 };
}

/**
 * The encoder's MLP matmuls (2048×192·192×768, then ·768×192), 8 deep, on one thread: what this
 * CPU sustains for the step's Gemm shapes right now. The output is reduced to a scalar so that
 * copying results out of onnxruntime does not count.
 */
async function gemmProbe(): Promise<() => Promise<number>> {
  const [M, K, N, depth] = [2048, 192, 768, 8];
  const g = new GraphBuilder('gemm');
  let y = g.input('a', 'float32', [M, K]);
  const up = g.input('up', 'float32', [K, N]);
  const down = g.input('down', 'float32', [N, K]);
  for (let i = 0; i < depth; i++) y = g.op('Gemm', [g.op('Gemm', [y, up]), down]);
  g.output(g.op('ReduceSum', [y], { keepdims: 0 }), 'y', 'float32', []);
  const s = await ort.InferenceSession.create(g.toBytes(), { intraOpNumThreads: 1, interOpNumThreads: 1 });
  const feeds = {
    a: new ort.Tensor('float32', randomArray(M * K, 1), [M, K]),
    up: new ort.Tensor('float32', randomArray(K * N, 2, 0.07), [K, N]),
    down: new ort.Tensor('float32', randomArray(N * K, 3, 0.07), [N, K]),
  };
  return async () => {
    await s.run(feeds);
    const reps = 5;
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) await s.run(feeds);
    return (2 * 2 * M * K * N * depth * reps) / ((performance.now() - t0) / 1000) / 1e9;
  };
}

function randomArray(n: number, seed: number, scale = 1): Float32Array {
  const rng = Rng.for(seed, 'gemm', 0);
  return Float32Array.from({ length: n }, () => scale * rng.normal());
}

if (withTfjs) await useBackend('wasm');
const engines: { name: string; run: (mb: MicroBatch, step: number) => unknown }[] = [];
for (const t of threads > 1 ? [1, threads] : [1]) {
  const e = await OrtEngine.create(m, online, target, {
    loss: 'mse',
    numTargets: defaultMaskConfig.numTargets,
    chunk,
    threads: t,
  });
  engines.push({ name: `onnxruntime, ${t} thread${t > 1 ? 's' : ''}`, run: (mb) => e.forwardBackward(mb, grad, 1) });
}
if (withTfjs) {
  const e = new TfjsEngine(m, online, target, { loss: 'mse', sigregWeight: 0, sigregProjections: 1, seed: 0, chunk });
  engines.push({ name: 'TF.js wasm + our kernels, 1 thread', run: (mb, step) => e.forwardBackward(mb, grad, 1, step) });
}
const gemm = await gemmProbe();

const samples = new Map<string, Sample[]>(engines.map((e) => [e.name, []]));
const gemmRates: number[] = [];
// Warm-up (session arenas, JIT), then interleaved rounds on the same batch per round.
for (const e of engines) await e.run(microBatch(0), 0);
for (let r = 1; r <= rounds; r++) {
  const mb = microBatch(r);
  for (const e of engines) samples.get(e.name)!.push(await timed(mb, () => e.run(mb, r)));
  gemmRates.push(await gemm());
  process.stderr.write(
    `round ${r}/${rounds}: ${engines.map((e) => `${e.name} ${samples.get(e.name)!.at(-1)!.imgs.toFixed(1)} img/s`).join(' | ')} | Gemm ${gemmRates.at(-1)!.toFixed(0)} GFLOP/s\n`,
  );
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log(
  `\nI-JEPA step, vit-tiny (32x32, patch 4), batch ${batch} (chunks of ${chunk}), medians of ${rounds} interleaved rounds:\n`,
);
console.log('| engine | s/step | img/s | GFLOP/s (useful matmul) |');
console.log('| --- | --- | --- | --- |');
for (const e of engines) {
  const s = samples.get(e.name)!;
  console.log(
    `| ${e.name} | ${median(s.map((x) => x.sec)).toFixed(2)} | ${median(s.map((x) => x.imgs)).toFixed(1)} | ${median(s.map((x) => x.gflops)).toFixed(1)} |`,
  );
}
console.log(`| (reference) MLP-shaped Gemms alone, onnxruntime, 1 thread | | | ${median(gemmRates).toFixed(1)} |`);
const base = engines[0].name;
for (const e of engines.slice(1)) {
  const ratios = samples.get(e.name)!.map((s, i) => samples.get(base)![i].imgs / s.imgs);
  console.log(
    `\n${base} / ${e.name}: ${median(ratios).toFixed(2)}x (per round: ${ratios.map((x) => x.toFixed(2)).join(', ')})`,
  );
}
const share = samples.get(base)!.map((s, i) => s.gflops / gemmRates[i]);
console.log(
  `${base}: useful matmul rate = ${(100 * median(share)).toFixed(0)}% of the single-Gemm rate measured in the same round`,
);
