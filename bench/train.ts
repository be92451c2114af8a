/**
 * npm run bench:train — I-JEPA training-step throughput of the TF.js engine on one core.
 * Ours (wasm + kernel workarounds + SIMD kernels) and stock tfjs-backend-wasm are measured in one
 * process, interleaved, on the same synthetic batches; the table reports medians and their ratio.
 *   BENCH_ROUNDS (3), BENCH_BATCH (128), BENCH_STOCK_BATCH (16), BENCH_CHUNK (32)
 */
import * as tf from '@tensorflow/tfjs-core';
import { setOptimizations, useBackend } from '../train/backend.ts';
import { TfjsEngine } from '../train/engine-tfjs.ts';
import { defaultMaskConfig, sampleMasks } from '../train/masks.ts';
import { gridOf, presets } from '../train/model/presets.ts';
import { encoderSpecs, predictorSpecs } from '../train/model/vit.ts';
import { ParamStore } from '../train/params.ts';
import { Rng } from '../train/rng.ts';
import { stepFlops } from '../train/flops.ts';

const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const batch = Number(process.env.BENCH_BATCH ?? 128);
const stockBatch = Number(process.env.BENCH_STOCK_BATCH ?? 16);
const chunk = Number(process.env.BENCH_CHUNK ?? 32);
const m = presets['vit-tiny'];

await useBackend('wasm');
const specs = [...encoderSpecs(m), ...predictorSpecs(m)];
const online = ParamStore.init(specs, 0, 'init');
const target = new ParamStore(encoderSpecs(m), online.data.slice(0, new ParamStore(encoderSpecs(m)).size));
const per = (m.imageSize / m.patchSize) ** 2 * m.patchSize ** 2 * 3;

function measure(label: string, b: number, fused: boolean, step: number) {
  const engine = new TfjsEngine(m, online, target, { loss: 'mse', sigregWeight: 0, sigregProjections: 1, seed: 0, chunk, fused });
  const rng = Rng.for(1, 'bench', step);
  const patches = Float32Array.from({ length: b * per }, () => rng.normal());
  const masks = sampleMasks(Rng.for(1, 'masks', step), gridOf(m), b, defaultMaskConfig);
  const grad = new Float32Array(online.size);
  const t0 = performance.now();
  engine.forwardBackward({ patches, batch: b, masks }, grad, 1, step);
  const sec = (performance.now() - t0) / 1000;
  engine.dispose();
  return { label, sec, imgs: b / sec, gflops: stepFlops(m, masks) / sec / 1e9 };
}

const results: Record<string, ReturnType<typeof measure>[]> = { ours: [], stock: [] };
// One warm-up step each (JIT, XNNPACK operator caches), then interleaved rounds.
setOptimizations(true);
measure('ours', batch, true, 0);
setOptimizations(false);
measure('stock', stockBatch, false, 0);
for (let r = 1; r <= rounds; r++) {
  setOptimizations(true);
  results.ours.push(measure('ours', batch, true, r));
  setOptimizations(false);
  results.stock.push(measure('stock', stockBatch, false, r));
  process.stderr.write(`round ${r}/${rounds}: ours ${results.ours.at(-1)!.imgs.toFixed(1)} img/s, stock ${results.stock.at(-1)!.imgs.toFixed(2)} img/s\n`);
}
setOptimizations(true);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const row = (name: string, b: number, rs: ReturnType<typeof measure>[]) => ({
  engine: name, batch: b, 's/step': median(rs.map((r) => r.sec)).toFixed(2), 'steps/s': (1 / median(rs.map((r) => r.sec))).toFixed(3),
  'img/s': median(rs.map((r) => r.imgs)).toFixed(2), 'GFLOP/s': median(rs.map((r) => r.gflops)).toFixed(1),
});
const ours = row('tfjs-wasm + workarounds (ours)', batch, results.ours);
const stock = row('tfjs-wasm stock (+ UnsortedSegmentSum)', stockBatch, results.stock);
console.log(`\nI-JEPA step, vit-tiny (32x32, patch 4), 1 thread, medians of ${rounds} interleaved rounds (${tf.getBackend()}):\n`);
console.log('| engine | batch | s/step | steps/s | img/s | GFLOP/s (matmul) |');
console.log('| --- | --- | --- | --- | --- | --- |');
for (const r of [ours, stock]) console.log(`| ${r.engine} | ${r.batch} | ${r['s/step']} | ${r['steps/s']} | ${r['img/s']} | ${r['GFLOP/s']} |`);
const ratios = results.ours.map((o, i) => o.imgs / results.stock[i].imgs);
const best = Math.max(...results.ours.map((r) => r.imgs));
console.log(`\nspeed-up, median of per-round ratios (ours / stock img/s): ${median(ratios).toFixed(1)}x (rounds: ${ratios.map((r) => r.toFixed(1)).join(', ')})`);
console.log(`ours, best round: ${best.toFixed(1)} img/s (this machine's speed drifts with load; compare within a round)`);
