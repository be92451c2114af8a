/**
 * npm run bench:train — I-JEPA training-step throughput on the CPU, vit-tiny, batch 128, every row
 * in one process, interleaved round by round on the same batches and masks:
 *   - onnxruntime, 1 thread, this project's masks (contexts padded per chunk to their longest);
 *   - the same with every context cut to the batch's shortest (the official sampler's shapes:
 *     the row to hold against the official PyTorch step);
 *   - the same in chunks of BENCH_ALT_CHUNK images;
 *   - onnxruntime on all threads; TF.js wasm (BENCH_TFJS=1);
 *   - with BENCH_DATA=<dataset>: the 1-thread step end to end, batches coming from the real loader;
 *   - with BENCH_OFFICIAL=<checkout of facebookresearch/ijepa>: that repository's own step at these
 *     shapes, 1 thread (bench/official/step.py, run by BENCH_PYTHON, default python3), with
 *     PyTorch's matmul ceiling measured in the same rounds;
 *   - a chain of MLP-shaped Gemms on 1 thread: the matmul ceiling, measured in the same rounds.
 * Each row warms up until two consecutive steps agree within 3%. Every round records CPU time beside
 * wall time: a 1-thread row whose CPU ÷ wall falls under 0.95 was waiting for the core (a busy
 * machine), and is flagged.
 * The step is the default recipe's (smooth-L1, SIGReg), on random patches with the masks of the
 * round.
 *   BENCH_ROUNDS (8), BENCH_BATCH (128), BENCH_CHUNK (32), BENCH_ALT_CHUNK (16), BENCH_TFJS (0),
 *   BENCH_DATA (unset)
 */
import { spawn } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { createInterface } from 'node:readline';
import * as ort from 'onnxruntime-node';
import type { MicroBatch } from '../train/engine.ts';
import { OrtEngine } from '../train/ort/engine.ts';
import { sampleMasks, type MaskBatch } from '../train/masks.ts';
import { Rng } from '../model/rng.ts';
import { stepFlops } from './flops.ts';
import { GraphBuilder } from '../onnx/graph.ts';
import { cfg, engineOptions, grad, grid, m, microBatch, online, target } from './step.ts';
import { preprocessOf } from '../train/loop.ts';

const rounds = Number(process.env.BENCH_ROUNDS ?? 8);
const batch = Number(process.env.BENCH_BATCH ?? 128);
const chunk = Number(process.env.BENCH_CHUNK ?? 32);
/** A second chunk size, timed as its own row (the size is a measured choice). */
const altChunk = Number(process.env.BENCH_ALT_CHUNK ?? 16);
const withTfjs = process.env.BENCH_TFJS === '1';
const dataPath = process.env.BENCH_DATA;
const officialPath = process.env.BENCH_OFFICIAL;
const threads = availableParallelism();
/** Round r's batch (round 0 warms up), made before any timing. */
const batches = Array.from({ length: rounds + 1 }, (_, r) => microBatch(r, batch));

/**
 * The official sampler's contexts: every image's context cut to the batch's shortest, keeping its
 * first indices (raster order), as facebookresearch/ijepa's MaskCollator does.
 */
function truncatedContexts(mk: MaskBatch): MaskBatch {
  const len = Math.min(...mk.ctxCount);
  const ctxIdx = new Int32Array(mk.batch * len);
  for (let b = 0; b < mk.batch; b++) ctxIdx.set(mk.ctxIdx.subarray(b * mk.ctxLen, b * mk.ctxLen + len), b * len);
  return {
    ...mk,
    ctxLen: len,
    ctxIdx,
    ctxMask: new Float32Array(mk.batch * len).fill(1),
    ctxCount: new Int32Array(mk.batch).fill(len),
  };
}

interface Sample {
  wall: number;
  /** Process CPU seconds (all threads) over the same interval. */
  cpu: number;
  imgs: number;
  flops: number;
}

async function timed(images: number, flops: number, f: () => unknown): Promise<Sample> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await f();
  const wall = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  return { wall, cpu: (c.user + c.system) / 1e6, imgs: images / wall, flops };
}

interface Row {
  name: string;
  threads: number;
  /** Images per chunk: contexts are padded to the longest of their chunk. */
  chunk: number;
  /**
   * One step on round r's batch; returns its masks (for FLOP and token counts) and, for a step
   * timed in another process, that process's own wall and CPU seconds.
   */
  step: (r: number) => Promise<{ masks: MaskBatch; measured?: { wall: number; cpu: number } }>;
  /** The matmul rate of the row's own library in the round (default: onnxruntime's Gemm chain). */
  ceiling?: () => Promise<Sample>;
}

/**
 * The encoder's MLP matmuls (2048×192·192×768, then ·768×192), 8 deep, on one thread: what this
 * core sustains for the step's Gemm shapes right now. Reduced to a scalar so that copying results
 * out of onnxruntime does not count.
 */
async function gemmProbe(): Promise<() => Promise<Sample>> {
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
  const reps = 5;
  await s.run(feeds);
  return () =>
    timed(0, 2 * 2 * M * K * N * depth * reps, async () => {
      for (let i = 0; i < reps; i++) await s.run(feeds);
    });
}

function randomArray(n: number, seed: number, scale = 1): Float32Array {
  const rng = Rng.for(seed, 'gemm', 0);
  return Float32Array.from({ length: n }, () => scale * rng.normal());
}

async function ortRow(
  name: string,
  t: number,
  masks: (mb: MicroBatch) => MicroBatch = (mb) => mb,
  size = chunk,
): Promise<Row> {
  const e = await OrtEngine.create(m, online, target, engineOptions(size, t));
  const mine = batches.map(masks);
  return {
    name,
    threads: t,
    chunk: size,
    step: async (r) => {
      await e.forwardBackward(mine[r], grad, 1);
      return mine[r];
    },
  };
}

const rows: Row[] = [await ortRow('onnxruntime, 1 thread', 1)];
rows.push(
  await ortRow('onnxruntime, 1 thread, contexts cut to the batch shortest', 1, (mb) => ({
    ...mb,
    masks: truncatedContexts(mb.masks),
  })),
);
rows.push(await ortRow(`onnxruntime, 1 thread, chunks of ${altChunk}`, 1, undefined, altChunk));
if (threads > 1) rows.push(await ortRow(`onnxruntime, ${threads} threads`, threads));
if (withTfjs) {
  const { useBackend } = await import('../train/tfjs/backend.ts');
  const { TfjsEngine } = await import('../train/tfjs/engine.ts');
  await useBackend('wasm');
  const e = new TfjsEngine(m, online, target, {
    loss: cfg.loss,
    sigregWeight: cfg.sigreg.weight,
    sigregProjections: cfg.sigreg.projections,
    seed: cfg.seed,
    chunk,
  });
  rows.push({
    name: 'TF.js wasm + our kernels, 1 thread',
    threads: 1,
    chunk,
    step: async (r) => {
      await e.forwardBackward(batches[r], grad, 1, r);
      return batches[r];
    },
  });
}
if (dataPath) {
  // The training loop's data path: the loader (decoding one batch ahead) and the mask sampler.
  const { openDataset } = await import('../train/data/open.ts');
  const { BatchLoader } = await import('../train/data/loader.ts');
  const loader = new BatchLoader(openDataset(dataPath), {
    batch,
    seed: 0,
    preprocess: preprocessOf(cfg),
    patch: m.patchSize,
    augment: cfg.augment,
  });
  const e = await OrtEngine.create(m, online, target, engineOptions(chunk, 1));
  rows.push({
    name: 'onnxruntime, 1 thread, end to end (loader + masks + step)',
    threads: 1,
    chunk,
    step: async (r) => {
      const b = await loader.next();
      // The round's masks, sampled here as the loop does: only the data path differs from row 1.
      const masks = sampleMasks(Rng.for(1, 'masks', r), grid, batch, cfg.masks);
      const mb = { patches: b.patches, batch, masks };
      await e.forwardBackward(mb, grad, 1);
      return mb;
    },
  });
}
/**
 * facebookresearch/ijepa's own step, one thread, in a Python process (bench/official/step.py) that
 * times itself: its wall and CPU seconds, and its library's matmul ceiling in the same round.
 */
async function officialRow(checkout: string): Promise<Row> {
  const python = process.env.BENCH_PYTHON ?? 'python3';
  const child = spawn(
    python,
    [new URL('official/step.py', import.meta.url).pathname, checkout, '--batch', `${batch}`],
    {
      env: { ...process.env, OMP_NUM_THREADS: '1', OPENBLAS_NUM_THREADS: '1', MKL_NUM_THREADS: '1' },
      stdio: ['pipe', 'pipe', 'inherit'],
    },
  );
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const ask = async (request: object) => {
    child.stdin.write(`${JSON.stringify(request)}\n`);
    const { value, done } = await lines.next();
    if (done) throw new Error(`${python} bench/official/step.py ended (exit ${child.exitCode}); see its error above`);
    return JSON.parse(value);
  };
  process.on('exit', () => child.kill());
  return {
    name: 'official PyTorch I-JEPA, 1 thread',
    threads: 1,
    chunk: batch,
    step: async (r) => {
      const o = await ask({ seed: r });
      // Every context and target cut to the batch's shortest, so one length each stands for all.
      const masks = {
        batch,
        numTargets: o.targets,
        tgtLen: o.tgt,
        ctxLen: o.ctx,
        ctxCount: new Int32Array(batch).fill(o.ctx),
      } as MaskBatch;
      return { masks, measured: { wall: o.wall, cpu: o.cpu } };
    },
    ceiling: async () => {
      const o = await ask({ gemm: true });
      return { wall: o.wall, cpu: o.cpu, imgs: 0, flops: o.flops };
    },
  };
}
if (officialPath) rows.push(await officialRow(officialPath));
const gemm = await gemmProbe();

// Warm-up until the step time is stable: the arena's first page faults and the JIT cost the first
// few steps 20–50% (a single warm-up step left rounds 1–3 reading low).
for (const row of rows) {
  const times: number[] = [];
  for (let i = 0; i < 12; i++) {
    const t0 = performance.now();
    await row.step(0);
    times.push(performance.now() - t0);
    const [a, b] = times.slice(-2);
    if (times.length >= 3 && Math.abs(a - b) / Math.min(a, b) < 0.03) break;
  }
  process.stderr.write(`warm-up ${row.name}: ${times.map((t) => (t / 1000).toFixed(2)).join(', ')} s\n`);
}

const samples = new Map<string, Sample[]>(rows.map((r) => [r.name, []]));
/** Per row, the matmul ceiling of its library measured in the same rounds. */
const ceilings = new Map<string, Sample[]>(rows.map((r) => [r.name, []]));
const ceiling: Sample[] = [];
const tokens = new Map<string, { ctx: number; padded: number; tgt: number }[]>(rows.map((r) => [r.name, []]));
for (let r = 1; r <= rounds; r++) {
  ceiling.push(await gemm());
  for (const row of rows) {
    let out: Awaited<ReturnType<Row['step']>> | undefined;
    const s = await timed(batch, 0, async () => {
      out = await row.step(r);
    });
    const k = out!.masks;
    if (out!.measured) Object.assign(s, out!.measured, { imgs: batch / out!.measured.wall });
    s.flops = stepFlops(m, k);
    samples.get(row.name)!.push(s);
    ceilings.get(row.name)!.push(row.ceiling ? await row.ceiling() : ceiling.at(-1)!);
    const real = k.ctxCount.reduce((a, b) => a + b, 0) / k.batch;
    tokens.get(row.name)!.push({ ctx: real, padded: paddedContext(k, row.chunk), tgt: k.tgtLen });
  }
  process.stderr.write(
    `round ${r}/${rounds}: ${rows.map((row) => `${samples.get(row.name)!.at(-1)!.imgs.toFixed(1)}`).join(' | ')} img/s | Gemm ${(ceiling.at(-1)!.flops / ceiling.at(-1)!.wall / 1e9).toFixed(0)} GFLOP/s\n`,
  );
}

/** Mean context length each chunk is padded to, per image (chunks sorted by length, as the engine runs them). */
function paddedContext(k: MaskBatch, size: number): number {
  const sorted = [...k.ctxCount].sort((a, b) => a - b);
  let sum = 0;
  for (let from = 0; from < sorted.length; from += size) {
    const part = sorted.slice(from, from + size);
    sum += part.length * Math.max(...part);
  }
  return sum / sorted.length;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const gflops = (s: Sample) => s.flops / s.wall / 1e9;
const busy = (s: Sample, t: number) => s.cpu / s.wall < 0.95 * t;

console.log(
  `\nI-JEPA step, vit-tiny (32×32, patch 4, d ${m.dim}, depth ${m.depth}, predictor ${m.predDim}×${m.predDepth}), batch ${batch} (chunks of ${chunk}), medians of ${rounds} interleaved rounds; ${threads} cores:\n`,
);
console.log(
  "| row | context (padded) / target tokens per image | useful GFLOP/img | s/step | img/s | useful GFLOP/s | % of its own library's matmul ceiling, same round | CPU ÷ wall |",
);
console.log('| --- | --- | --- | --- | --- | --- | --- | --- |');
for (const row of rows) {
  const s = samples.get(row.name)!;
  const all = tokens.get(row.name)!;
  const mean = (f: (x: (typeof all)[number]) => number) => all.reduce((a, x) => a + f(x), 0) / all.length;
  const t = { ctx: mean((x) => x.ctx), padded: mean((x) => x.padded), tgt: mean((x) => x.tgt) };
  const own = ceilings.get(row.name)!;
  const share = s.map((x, i) => gflops(x) / gflops(own[i]));
  console.log(
    `| ${row.name} | ${t.ctx.toFixed(1)} (${t.padded.toFixed(1)}) / ${t.tgt.toFixed(1)} | ${(median(s.map((x) => x.flops)) / batch / 1e9).toFixed(2)} | ${median(s.map((x) => x.wall)).toFixed(2)} | ${median(s.map((x) => x.imgs)).toFixed(1)} | ${median(s.map(gflops)).toFixed(1)} | ${row.threads === 1 ? `${(100 * median(share)).toFixed(0)}%` : '-'} | ${median(s.map((x) => x.cpu / x.wall)).toFixed(2)} |`,
  );
}
console.log(
  `| MLP-shaped Gemms alone, onnxruntime, 1 thread (the ceiling) | | | | | ${median(ceiling.map(gflops)).toFixed(1)} | 100% | ${median(ceiling.map((x) => x.cpu / x.wall)).toFixed(2)} |`,
);
for (const row of rows.filter((r) => r.ceiling)) {
  const own = ceilings.get(row.name)!;
  console.log(
    `| the same Gemms in ${row.name}'s library (its ceiling) | | | | | ${median(own.map(gflops)).toFixed(1)} | 100% | ${median(own.map((x) => x.cpu / x.wall)).toFixed(2)} |`,
  );
}

console.log('\nPer round: img/s (CPU ÷ wall); * marks a round where a 1-thread row waited for its core.\n');
console.log(`| round | ${rows.map((r) => r.name).join(' | ')} | Gemm GFLOP/s |`);
console.log(`| --- | ${rows.map(() => '---').join(' | ')} | --- |`);
for (let i = 0; i < rounds; i++) {
  const cells = rows.map((row) => {
    const s = samples.get(row.name)![i];
    return `${s.imgs.toFixed(1)} (${(s.cpu / s.wall).toFixed(2)})${busy(s, row.threads) ? ' *' : ''}`;
  });
  const g = ceiling[i];
  console.log(
    `| ${i + 1} | ${cells.join(' | ')} | ${gflops(g).toFixed(0)} (${(g.cpu / g.wall).toFixed(2)})${busy(g, 1) ? ' *' : ''} |`,
  );
}
const flagged = rows.flatMap((row) => samples.get(row.name)!.filter((s) => busy(s, row.threads))).length;
if (flagged) console.log(`\n${flagged} measurements waited for a core: a busy machine; compare ratios, not rates.`);

const base = rows[0].name;
for (const row of rows.slice(1)) {
  const ratios = samples.get(row.name)!.map((s, i) => s.imgs / samples.get(base)![i].imgs);
  console.log(
    `\n${row.name} / ${base}: ${median(ratios).toFixed(2)}× img/s (per round: ${ratios.map((x) => x.toFixed(2)).join(', ')})`,
  );
}
