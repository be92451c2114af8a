/**
 * npm run bench:profile — where one CPU training step's time goes, by kind of op: the step of
 * bench:train (vit-tiny, batch 128, chunks of 32, 1 thread) under onnxruntime's profiler. Each
 * node's time is its minimum over the profiled steps (a step is all of its chunks), which takes
 * out most of a shared machine's noise; the shares are of the sum of those minima.
 *   PROFILE_STEPS (4), BENCH_BATCH (128), BENCH_CHUNK (32), PROFILE_THREADS (1)
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OrtEngine } from '../train/ort/engine.ts';
import { engineOptions, grad, m, microBatch, online, target } from './step.ts';

const steps = Number(process.env.PROFILE_STEPS ?? 4);
const batch = Number(process.env.BENCH_BATCH ?? 128);
const chunk = Number(process.env.BENCH_CHUNK ?? 32);
const threads = Number(process.env.PROFILE_THREADS ?? 1);
const WARMUP = 3;
const CATEGORIES: [string, RegExp][] = [
  ['matmul (MatMul, Gemm and their fusions)', /^(Fused)?(MatMul|Gemm)|MatMul/],
  ['GELU (Gelu, Erf)', /^(Gelu|BiasGelu|FastGelu|Erf)$/],
  ['LayerNorm forward', /LayerNormalization$/],
  ['Softmax', /^Softmax$/],
  [
    'elementwise (Mul, Add, Sub, Neg, Div, Exp, …)',
    /^(Mul|Add|Sub|Neg|Div|Exp|Sqrt|Pow|Where|Cast|Equal|Sin|Cos|Abs|Clip)$/,
  ],
  ['reductions', /^Reduce/],
  [
    'layout (Transpose, Reshape, Split, Concat, Slice, Pad, Expand, …)',
    /^(Transpose|Reshape|Split|Concat|Squeeze|Unsqueeze|Slice|Pad|Expand|Identity|Shape)$/,
  ],
  ['gather / scatter', /^(Gather|GatherND|ScatterND|Scatter.*)$/],
];

const mb = microBatch(0, batch);

const dir = mkdtempSync(join(tmpdir(), 'ijepa-profile-'));
process.env.IJEPA_ORT_PROFILE = join(dir, 'step');
const engine = await OrtEngine.create(m, online, target, engineOptions(chunk, threads));
const walls: number[] = [];
for (let i = 0; i < WARMUP + steps; i++) {
  const t0 = performance.now();
  await engine.forwardBackward(mb, grad, 1);
  walls.push(performance.now() - t0);
}
await engine.dispose(); // writes the profiles

// The step session's profile is the big one (the diagnostics session never ran).
const file = readdirSync(dir)
  .map((f) => join(dir, f))
  .sort((a, b) => statSync(b).size - statSync(a).size)[0];
interface Event {
  cat: string;
  name: string;
  ts: number;
  dur: number;
  args?: { op_name?: string };
}
const events = JSON.parse(readFileSync(file, 'utf8')) as Event[];
rmSync(dir, { recursive: true, force: true });

const runs = events.filter((e) => e.cat === 'Session' && e.name === 'model_run').sort((a, b) => a.ts - b.ts);
const chunksPerStep = runs.length / (WARMUP + steps);
const stepOf = (ts: number) => {
  let lo = 0;
  while (lo + 1 < runs.length && runs[lo + 1].ts <= ts) lo++;
  return Math.floor(lo / chunksPerStep);
};
/** node → op and per-step total µs */
const nodes = new Map<string, { op: string; perStep: number[] }>();
for (const e of events) {
  if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time')) continue;
  const s = stepOf(e.ts) - WARMUP;
  if (s < 0) continue;
  const name = e.name.slice(0, -'_kernel_time'.length);
  const n = nodes.get(name) ?? { op: e.args?.op_name ?? '?', perStep: new Array<number>(steps).fill(0) };
  n.perStep[s] += e.dur;
  nodes.set(name, n);
}

const byCategory = new Map<string, { us: number; nodes: number }>();
const byOp = new Map<string, number>();
let total = 0;
for (const { op, perStep } of nodes.values()) {
  const us = Math.min(...perStep);
  total += us;
  const cat = CATEGORIES.find(([, re]) => re.test(op))?.[0] ?? `other (${op})`;
  const c = byCategory.get(cat) ?? { us: 0, nodes: 0 };
  c.us += us;
  c.nodes++;
  byCategory.set(cat, c);
  byOp.set(op, (byOp.get(op) ?? 0) + us);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log(
  `\nvit-tiny step, batch ${batch} in chunks of ${chunk}, ${threads} thread${threads > 1 ? 's' : ''}: ${nodes.size} nodes; kernel time ${(total / 1000).toFixed(0)} ms per step (sum of per-node minima over ${steps} steps), wall ${median(walls.slice(WARMUP)).toFixed(0)} ms (median)\n`,
);
console.log('| ops | nodes | ms per step | share |');
console.log('| --- | --- | --- | --- |');
for (const [cat, c] of [...byCategory].sort((a, b) => b[1].us - a[1].us))
  console.log(`| ${cat} | ${c.nodes} | ${(c.us / 1000).toFixed(1)} | ${((100 * c.us) / total).toFixed(1)}% |`);
console.log('\nBy op type (top 12):\n');
console.log('| op | ms per step | share |');
console.log('| --- | --- | --- |');
for (const [op, us] of [...byOp].sort((a, b) => b[1] - a[1]).slice(0, 12))
  console.log(`| ${op} | ${(us / 1000).toFixed(1)} | ${((100 * us) / total).toFixed(1)}% |`);
