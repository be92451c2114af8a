/**
 * Fused kernels written in JS over the backends' own memory (the wasm heap, the cpu backend's
 * arrays), with registered gradients. They replace chains of elementwise kernels (each a full pass
 * over memory, and ~1 ns/element on wasm) with one pass, and avoid tf.customGrad's identity copies.
 * Backends without them (tfjs-node) use the composite ops in ops.ts; a test checks both agree.
 */
import * as tf from '@tensorflow/tfjs-core';
import { KERNELS_WASM_BASE64 } from './simd/kernels-wasm.ts';

type Arr = Float32Array | Int32Array | Uint8Array;
type Info = tf.TensorInfo;

/** The exports of simd/kernels.wat; arguments are byte offsets into the wasm heap and sizes. */
export type Simd = Record<
  | 'gelu'
  | 'gelu_grad'
  | 'softmax'
  | 'softmax_grad'
  | 'layer_norm'
  | 'layer_norm_grad'
  | 'column_sum'
  | 'transpose2d'
  | 'batch_matmul',
  (...a: number[]) => void
>;

interface JsKernel {
  name: string;
  inputs: string[];
  /** Output shapes from the input shapes. */
  outputs(shapes: number[][], attrs: Record<string, unknown>): number[][];
  /** Reference implementation (cpu backend, and wasm when `simd` declines). */
  compute(ins: Arr[], outs: Float32Array[], shapes: number[][], attrs: Record<string, unknown>): void;
  /** SIMD (or heap-copy) implementation on byte offsets into `heap`; false when the shapes do not suit it. */
  simd?(
    k: Simd,
    ins: number[],
    outs: number[],
    shapes: number[][],
    attrs: Record<string, unknown>,
    heap: Float32Array,
  ): boolean;
}

export interface WasmLike {
  makeOutput(shape: number[], dtype: tf.DataType): Info;
  typedArrayFromHeap(t: Info): Arr;
  dataIdMap: { get(id: tf.DataId): { memoryOffset: number } };
  wasm: { asm: { memory: WebAssembly.Memory } };
}

const simdModules = new WeakMap<object, Simd>();

/** The SIMD kernels instantiated on this backend's memory (once per backend). */
export function simdFor(be: WasmLike): Simd {
  let k = simdModules.get(be);
  if (!k) {
    const module = new WebAssembly.Module(Buffer.from(KERNELS_WASM_BASE64, 'base64'));
    k = new WebAssembly.Instance(module, { env: { memory: be.wasm.asm.memory } }).exports as unknown as Simd;
    simdModules.set(be, k);
  }
  return k;
}
interface CpuLike {
  data: { get(id: tf.DataId): { values: Arr } };
  makeTensorInfo(shape: number[], dtype: tf.DataType, values: Float32Array): Info;
}

const size = (s: number[]) => s.reduce((a, b) => a * b, 1);

function register(k: JsKernel): void {
  const wasm: tf.KernelFunc = ({ inputs, backend, attrs: a }) => {
    const be = backend as unknown as WasmLike;
    const attrs = (a ?? {}) as Record<string, unknown>;
    const ins = k.inputs.map((n) => inputs[n] as Info);
    const shapes = ins.map((t) => t.shape);
    const outs = k.outputs(shapes, attrs).map((s) => be.makeOutput(s, 'float32'));
    const ptr = (t: Info) => be.dataIdMap.get(t.dataId).memoryOffset;
    const handled = k.simd?.(
      simdFor(be),
      ins.map(ptr),
      outs.map(ptr),
      shapes,
      attrs,
      new Float32Array(be.wasm.asm.memory.buffer),
    );
    if (handled) return outs.length === 1 ? outs[0] : outs;
    // Views only after every makeOutput: growing the heap detaches earlier views.
    k.compute(
      ins.map((t) => be.typedArrayFromHeap(t)),
      outs.map((o) => be.typedArrayFromHeap(o) as Float32Array),
      shapes,
      attrs,
    );
    return outs.length === 1 ? outs[0] : outs;
  };
  const cpu: tf.KernelFunc = ({ inputs, backend, attrs }) => {
    const be = backend as unknown as CpuLike;
    const ins = k.inputs.map((n) => inputs[n] as Info);
    const shapes = ins.map((t) => t.shape);
    const outShapes = k.outputs(shapes, (attrs ?? {}) as Record<string, unknown>);
    const outs = outShapes.map((s) => new Float32Array(size(s)));
    k.compute(
      ins.map((t) => be.data.get(t.dataId).values),
      outs,
      shapes,
      (attrs ?? {}) as Record<string, unknown>,
    );
    const infos = outs.map((o, i) => be.makeTensorInfo(outShapes[i], 'float32', o));
    return infos.length === 1 ? infos[0] : infos;
  };
  for (const [backendName, kernelFunc] of [
    ['wasm', wasm],
    ['cpu', cpu],
  ] as const) {
    if (!tf.getKernel(k.name, backendName)) tf.registerKernel({ kernelName: k.name, backendName, kernelFunc });
  }
}

/**
 * erf by Abramowitz & Stegun 7.1.28 (|error| < 3e-7, float32 resolution near ±1) with no
 * transcendental call: V8's Math.exp costs ~15 ns, this ~5 ns.
 */
export function erf(x: number): number {
  const z = Math.abs(x);
  let p =
    1 +
    z *
      (0.0705230784 +
        z * (0.0422820123 + z * (0.0092705272 + z * (0.0001520143 + z * (0.0002765672 + z * 0.0000430638)))));
  p *= p;
  p *= p;
  p *= p;
  p *= p;
  const r = 1 - 1 / p;
  return x < 0 ? -r : r;
}

const POW2 = Float64Array.from({ length: 255 }, (_, i) => 2 ** (i - 127));

/** e^x for x ≤ ~88 by range reduction to |r| ≤ ln2/2 and a degree-7 Taylor polynomial (relative error < 1e-8). */
export function exp(x: number): number {
  if (x < -87) return 0;
  const k = Math.round(x * Math.LOG2E);
  const r = x - k * Math.LN2;
  const p = 1 + r * (1 + r * (0.5 + r * (1 / 6 + r * (1 / 24 + r * (1 / 120 + r * (1 / 720 + r / 5040))))));
  return p * POW2[k + 127];
}

/** Swaps the last two axes (the explicit transpose the matmul gradients multiply with). */
const transposeLast2 = (t: tf.Tensor) =>
  tf.transpose(
    t,
    [...t.shape.keys()].map((i, _, all) => (i < all.length - 2 ? i : 2 * all.length - 3 - i)),
  );

const INV_SQRT2 = Math.SQRT1_2;
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/**
 * Visits the rows of hd floats that a q|k|v split moves: `f` in the fused projection
 * [B, L, 3, H, hd] and `p` in head tensor `s` (q, k or v) of shape [B, H, L, hd], both in floats.
 */
function forEachQkvRow(
  b: number,
  l: number,
  heads: number,
  hd: number,
  visit: (s: number, f: number, p: number) => void,
): void {
  for (let i = 0; i < b; i++)
    for (let t = 0; t < l; t++)
      for (let s = 0; s < 3; s++)
        for (let h = 0; h < heads; h++) {
          visit(s, (((i * l + t) * 3 + s) * heads + h) * hd, ((i * heads + h) * l + t) * hd);
        }
}

const headShape = (s: number[], heads: number) => [s[0], heads, s[1], s[2] / 3 / heads];

const kernels: JsKernel[] = [
  {
    name: 'IjSplitHeads',
    inputs: ['x'],
    outputs: ([s], attrs) => {
      const h = headShape(s, attrs.heads as number);
      return [h, h, h];
    },
    compute: ([x], outs, [s], attrs) => {
      const [b, heads, l, hd] = headShape(s, attrs.heads as number);
      forEachQkvRow(b, l, heads, hd, (part, f, p) => outs[part].set(x.subarray(f, f + hd), p));
    },
    simd: (_k, [x], outs, [s], attrs, heap) => {
      const [b, heads, l, hd] = headShape(s, attrs.heads as number);
      const [src, dst] = [x / 4, outs.map((o) => o / 4)];
      forEachQkvRow(b, l, heads, hd, (part, f, p) => heap.copyWithin(dst[part] + p, src + f, src + f + hd));
      return true;
    },
  },
  {
    name: 'IjMergeHeads',
    inputs: ['q', 'k', 'v'],
    outputs: ([s]) => [[s[0], s[2], 3 * s[1] * s[3]]],
    compute: (parts, [x], [s]) => {
      const [b, heads, l, hd] = s;
      forEachQkvRow(b, l, heads, hd, (part, f, p) => x.set(parts[part].subarray(p, p + hd), f));
    },
    simd: (_k, parts, [x], [s], _a, heap) => {
      const [b, heads, l, hd] = s;
      const [src, dst] = [parts.map((o) => o / 4), x / 4];
      forEachQkvRow(b, l, heads, hd, (part, f, p) => heap.copyWithin(dst + f, src[part] + p, src[part] + p + hd));
      return true;
    },
  },
  {
    name: 'IjGelu',
    inputs: ['x'],
    outputs: (s) => [s[0]],
    compute: ([x], [y]) => {
      for (let i = 0; i < x.length; i++) y[i] = 0.5 * x[i] * (1 + erf(x[i] * INV_SQRT2));
    },
    simd: (k, [x], [y], [s]) => (k.gelu(x, y, size(s)), true),
  },
  {
    name: 'IjGeluGrad',
    inputs: ['dy', 'x'],
    outputs: (s) => [s[1]],
    compute: ([dy, x], [dx]) => {
      for (let i = 0; i < x.length; i++) {
        const v = x[i];
        dx[i] = dy[i] * (0.5 * (1 + erf(v * INV_SQRT2)) + v * INV_SQRT_2PI * exp(-0.5 * v * v));
      }
    },
    simd: (k, [dy, x], [dx], [s]) => (k.gelu_grad(dy, x, dx, size(s)), true),
  },
  {
    // y = (x - mean)·rstd·gamma + beta over the last axis; also outputs mean and rstd for the backward.
    name: 'IjLayerNorm',
    inputs: ['x', 'gamma', 'beta'],
    outputs: (s) => [s[0], s[0].slice(0, -1), s[0].slice(0, -1)],
    compute: ([x, g, b], [y, mean, rstd], _s, attrs) => {
      const d = g.length;
      const eps = attrs.eps as number;
      const rows = x.length / d;
      for (let r = 0; r < rows; r++) {
        const o = r * d;
        let m = 0;
        for (let j = 0; j < d; j++) m += x[o + j];
        m /= d;
        let v = 0;
        for (let j = 0; j < d; j++) v += (x[o + j] - m) ** 2;
        const inv = 1 / Math.sqrt(v / d + eps);
        mean[r] = m;
        rstd[r] = inv;
        for (let j = 0; j < d; j++) y[o + j] = (x[o + j] - m) * inv * g[j] + b[j];
      }
    },
    simd: (k, [x, g, b], [y, mean, rstd], [s], attrs) => {
      const d = s[s.length - 1];
      if (d % 4) return false;
      k.layer_norm(x, g, b, y, mean, rstd, size(s) / d, d, attrs.eps as number);
      return true;
    },
  },
  {
    name: 'IjLayerNormGrad',
    inputs: ['dy', 'x', 'gamma', 'mean', 'rstd'],
    outputs: (s) => [s[1], s[2], s[2]],
    compute: ([dy, x, g, mean, rstd], [dx, dg, db]) => {
      const d = g.length;
      const rows = x.length / d;
      dg.fill(0);
      db.fill(0);
      for (let r = 0; r < rows; r++) {
        const o = r * d;
        const m = mean[r];
        const inv = rstd[r];
        let s1 = 0;
        let s2 = 0;
        for (let j = 0; j < d; j++) {
          const xh = (x[o + j] - m) * inv;
          const gy = dy[o + j];
          const dxh = gy * g[j];
          s1 += dxh;
          s2 += dxh * xh;
          dg[j] += gy * xh;
          db[j] += gy;
        }
        s1 /= d;
        s2 /= d;
        for (let j = 0; j < d; j++) {
          const xh = (x[o + j] - m) * inv;
          dx[o + j] = inv * (dy[o + j] * g[j] - s1 - xh * s2);
        }
      }
    },
    simd: (k, [dy, x, g, mean, rstd], [dx, dg, db], [, s]) => {
      const d = s[s.length - 1];
      if (d % 4) return false;
      k.layer_norm_grad(dy, x, g, mean, rstd, dx, dg, db, size(s) / d, d);
      return true;
    },
  },
  {
    name: 'IjSoftmax',
    inputs: ['x'],
    outputs: (s) => [s[0]],
    compute: ([x], [y], [shape]) => {
      const d = shape[shape.length - 1];
      for (let o = 0; o < x.length; o += d) {
        let max = -Infinity;
        for (let j = 0; j < d; j++) if (x[o + j] > max) max = x[o + j];
        let sum = 0;
        for (let j = 0; j < d; j++) sum += y[o + j] = exp(x[o + j] - max);
        const inv = 1 / sum;
        for (let j = 0; j < d; j++) y[o + j] *= inv;
      }
    },
    simd: (k, [x], [y], [s]) => (k.softmax(x, y, size(s) / s[s.length - 1], s[s.length - 1]), true),
  },
  {
    name: 'IjSoftmaxGrad',
    inputs: ['dy', 'y'],
    outputs: (s) => [s[1]],
    compute: ([dy, y], [dx], [shape]) => {
      const d = shape[shape.length - 1];
      for (let o = 0; o < y.length; o += d) {
        let dot = 0;
        for (let j = 0; j < d; j++) dot += dy[o + j] * y[o + j];
        for (let j = 0; j < d; j++) dx[o + j] = y[o + j] * (dy[o + j] - dot);
      }
    },
    simd: (k, [dy, y], [dx], [, s]) => (k.softmax_grad(dy, y, dx, size(s) / s[s.length - 1], s[s.length - 1]), true),
  },
  {
    // Sum over every axis but the last: the bias gradient.
    name: 'IjColumnSum',
    inputs: ['x'],
    outputs: (s) => [[s[0][s[0].length - 1]]],
    compute: ([x], [y]) => {
      const c = y.length;
      y.fill(0);
      for (let o = 0; o < x.length; o += c) for (let j = 0; j < c; j++) y[j] += x[o + j];
    },
    simd: (k, [x], [y], [s]) => {
      const c = s[s.length - 1];
      if (c % 4) return false;
      k.column_sum(x, y, size(s) / c, c);
      return true;
    },
  },
];

let registered = false;

const run = (name: string, inputs: Record<string, tf.Tensor>, attrs: Record<string, unknown> = {}) =>
  tf.engine().runKernel(name, inputs as unknown as tf.NamedTensorMap, attrs as tf.NamedAttrMap) as
    | tf.Tensor
    | tf.Tensor[];

/** Registers the fused kernels (wasm, cpu) and their gradients. Idempotent. */
export function registerFusedKernels(): void {
  if (registered) return;
  registered = true;
  kernels.forEach(register);
  // _FusedMatMul (matmul + bias in one XNNPACK call), with a gradient free of transpose flags.
  tf.registerGradient({
    kernelName: '_FusedMatMul',
    inputsToSave: ['a', 'b'],
    gradFunc: (dy, saved) => {
      const [a, b] = saved;
      const g = dy as tf.Tensor;
      return {
        a: () => tf.matMul(g, transposeLast2(b)),
        b: () => tf.matMul(transposeLast2(a), g),
        bias: () => run('IjColumnSum', { x: g }) as tf.Tensor,
      };
    },
  });
  tf.registerGradient({
    kernelName: 'IjSplitHeads',
    gradFunc: (dy) => {
      const [q, k, v] = dy as tf.Tensor[];
      return { x: () => run('IjMergeHeads', { q, k, v }) as tf.Tensor };
    },
  });
  tf.registerGradient({
    kernelName: 'IjGelu',
    inputsToSave: ['x'],
    gradFunc: (dy, saved) => ({ x: () => run('IjGeluGrad', { dy: dy as tf.Tensor, x: saved[0] }) as tf.Tensor }),
  });
  tf.registerGradient({
    kernelName: 'IjLayerNorm',
    inputsToSave: ['x', 'gamma'],
    outputsToSave: [false, true, true],
    gradFunc: (dy, saved) => {
      const [x, gamma, mean, rstd] = saved;
      const [dx, dg, db] = run('IjLayerNormGrad', { dy: (dy as tf.Tensor[])[0], x, gamma, mean, rstd }) as tf.Tensor[];
      return { x: () => dx, gamma: () => dg, beta: () => db };
    },
  });
  tf.registerGradient({
    kernelName: 'IjSoftmax',
    outputsToSave: [true],
    gradFunc: (dy, saved) => ({ x: () => run('IjSoftmaxGrad', { dy: dy as tf.Tensor, y: saved[0] }) as tf.Tensor }),
  });
}

/** Whether the active backend has the fused kernels (wasm and cpu do; tfjs-node does not). */
export function fusedAvailable(): boolean {
  return !!tf.getKernel('IjGelu', tf.getBackend());
}

export const fused = {
  gelu: (x: tf.Tensor) => run('IjGelu', { x }) as tf.Tensor,
  layerNorm: (x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, eps: number) =>
    (run('IjLayerNorm', { x, gamma, beta }, { eps }) as tf.Tensor[])[0],
  softmax: (x: tf.Tensor) => run('IjSoftmax', { x }) as tf.Tensor,
  /** x [R, K] · w [K, N] + bias [N] in one kernel. */
  linear: (x: tf.Tensor, w: tf.Tensor, bias: tf.Tensor) => {
    const [r, k] = x.shape;
    const out = run(
      '_FusedMatMul',
      { a: tf.reshape(x, [1, r, k]), b: tf.reshape(w, [1, k, w.shape[1]!]), bias },
      {
        transposeA: false,
        transposeB: false,
        activation: 'linear',
        leakyreluAlpha: 0.2,
      },
    ) as tf.Tensor;
    return tf.reshape(out, [r!, w.shape[1]!]);
  },
  splitHeads: (x: tf.Tensor, heads: number) =>
    run('IjSplitHeads', { x }, { heads }) as [tf.Tensor, tf.Tensor, tf.Tensor],
};

const ourGradients = new Map<string, tf.GradConfig>();

/**
 * Gradient overrides, for every backend:
 * - BatchMatMul: the stock gradient multiplies with transpose flags, which sends the wasm backend
 *   off XNNPACK onto a ~1 GFLOP/s loop; this one transposes explicitly and multiplies without flags.
 * - Add: the stock gradient reduces a broadcast bias with Sum, which wasm runs through its slow
 *   transpose; the common case (bias over the last axis) gets one column-sum pass instead.
 */
export function registerGradientOverrides(): void {
  if (ourGradients.size) return;
  const stockMatMul = tf.getGradient('BatchMatMul')!;
  const stockAdd = tf.getGradient('Add')!;
  ourGradients.set('BatchMatMul', {
    kernelName: 'BatchMatMul',
    inputsToSave: ['a', 'b'],
    gradFunc: (dy, saved, attrs) => {
      const { transposeA, transposeB } = attrs as unknown as { transposeA: boolean; transposeB: boolean };
      if (transposeA || transposeB) return stockMatMul.gradFunc(dy, saved, attrs);
      const [a, b] = saved;
      return {
        a: () => tf.matMul(dy as tf.Tensor, transposeLast2(b)),
        b: () => tf.matMul(transposeLast2(a), dy as tf.Tensor),
      };
    },
  });
  ourGradients.set('Add', {
    kernelName: 'Add',
    inputsToSave: ['a', 'b'],
    gradFunc: (dy, saved, attrs) => {
      const [a, b] = saved;
      const g = dy as tf.Tensor;
      const isBias = (t: tf.Tensor) => t.rank === 1 && g.rank >= 2 && t.shape[0] === g.shape[g.rank - 1];
      if (fusedAvailable() && isBias(b) && tf.util.arraysEqual(a.shape, g.shape))
        return { a: () => g, b: () => run('IjColumnSum', { x: g }) as tf.Tensor };
      return stockAdd.gradFunc(dy, saved, attrs);
    },
  });
  for (const g of ourGradients.values()) tf.registerGradient(g);
}
