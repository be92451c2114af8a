/**
 * TF.js backend selection, plus the kernels the wasm backend lacks or runs slowly.
 *
 * Workarounds for @tensorflow/tfjs-backend-wasm (each has a test against the cpu backend):
 * - Transpose: the wasm kernel moves ~12M elements/s on rank ≥ 4; a JS loop over the heap is ~20× faster.
 * - UnsortedSegmentSum (the gradient of gather) has no wasm kernel; registered here in JS.
 * - gather with batchDims=1 and GatherNd's missing gradient are avoided by flattened gathers (ops.ts).
 * - BatchMatMul with transpose flags leaves XNNPACK: the linear backward transposes explicitly (ops.ts).
 * - oneHot(…, 'float32') is wrong on wasm: nothing here uses it.
 * - Identity copies its input; the engine clones every tensor it saves for the backward pass, so
 *   this doubled memory traffic. Registered here as a shared reference, as the cpu backend does.
 */
import * as tf from '@tensorflow/tfjs-core';
// tfjs-core ships gradients only as ES modules Node cannot load; the union bundle registers them.
import '@tensorflow/tfjs';
import { registerFusedKernels, registerGradientOverrides, simdFor, type WasmLike } from './kernels.ts';

export type BackendName = 'wasm' | 'cpu' | 'tensorflow';

interface HeapBackend {
  makeOutput(shape: number[], dtype: tf.DataType, memoryOffset?: number): tf.TensorInfo;
  typedArrayFromHeap(t: tf.TensorInfo): Float32Array | Int32Array | Uint8Array;
  dataIdMap: { get(id: tf.DataId): { memoryOffset: number } };
  wasm: { asm: { memory: WebAssembly.Memory } };
}

function stridesOf(shape: number[]): number[] {
  const s = new Array<number>(shape.length).fill(1);
  for (let i = shape.length - 2; i >= 0; i--) s[i] = s[i + 1] * shape[i + 1];
  return s;
}

type Buf = { [i: number]: number; length: number };

/** Drops size-1 axes and merges input axes that stay adjacent in the output. */
export function simplifyPermutation(shape: number[], perm: number[]): { shape: number[]; perm: number[] } {
  const keep = perm.filter((p) => shape[p] !== 1);
  const groups: number[][] = [];
  for (const p of keep) {
    const last = groups[groups.length - 1];
    if (last && last[last.length - 1] + 1 === p) last.push(p);
    else groups.push([p]);
  }
  const order = [...groups].sort((a, b) => a[0] - b[0]);
  const newShape = order.map((g) => g.reduce((n, p) => n * shape[p], 1));
  return { shape: newShape, perm: groups.map((g) => order.indexOf(g)) };
}

/** out = transpose(src, perm), any element type (float32 on wasm goes through transposeOnHeap first). */
export function transposeInto(src: Buf, shape0: number[], perm0: number[], dst: Buf): void {
  const { shape, perm } = simplifyPermutation(shape0, perm0);
  const rank = shape.length;
  if (rank <= 1) {
    for (let i = 0; i < dst.length; i++) dst[i] = src[i];
    return;
  }
  const inner = shape[perm[rank - 1]];
  const innerStride = stridesOf(shape)[perm[rank - 1]];
  let o = 0;
  walkRows(shape, perm, (base) => {
    if (innerStride === 1) for (let i = 0; i < inner; i++) dst[o++] = src[base + i];
    else for (let i = 0, s = base; i < inner; i++, s += innerStride) dst[o++] = src[s];
  });
}

/**
 * Visits the output rows (all axes but the last) of transpose(shape, perm) in order, passing the
 * input offset where each row starts.
 */
function walkRows(shape: number[], perm: number[], visit: (base: number) => void): void {
  const rank = shape.length;
  const inStrides = stridesOf(shape);
  const outShape = perm.map((p) => shape[p]);
  const stride = perm.map((p) => inStrides[p]);
  const rows = outShape.slice(0, -1).reduce((a, b) => a * b, 1);
  const counter = new Array<number>(rank - 1).fill(0);
  let base = 0;
  for (let n = 0; n < rows; n++) {
    visit(base);
    for (let a = rank - 2; a >= 0; a--) {
      counter[a]++;
      base += stride[a];
      if (counter[a] < outShape[a]) break;
      base -= stride[a] * outShape[a];
      counter[a] = 0;
    }
  }
}

/**
 * Float32 transposes on the heap itself: batched 2-D ones by the SIMD kernel, ones that keep the
 * last axis as row copies (copyWithin). Returns false for the rest.
 */
function transposeOnHeap(be: HeapBackend, x: tf.TensorInfo, out: tf.TensorInfo, perm0: number[]): boolean {
  const { shape, perm } = simplifyPermutation(x.shape, perm0);
  const src = be.dataIdMap.get(x.dataId).memoryOffset;
  const dst = be.dataIdMap.get(out.dataId).memoryOffset;
  const rank = shape.length;
  if (rank === 2 || (rank === 3 && perm[0] === 0 && perm[1] === 2 && perm[2] === 1)) {
    const [batch, rows, cols] = rank === 2 ? [1, shape[0], shape[1]] : shape;
    simdFor(be as unknown as WasmLike).transpose2d(src, dst, batch, rows, cols);
    return true;
  }
  if (rank >= 3 && perm[rank - 1] === rank - 1) {
    const heap = new Float32Array(be.wasm.asm.memory.buffer);
    const inner = shape[rank - 1];
    let o = dst / 4;
    walkRows(shape, perm, (base) => {
      heap.copyWithin(o, src / 4 + base, src / 4 + base + inner);
      o += inner;
    });
    return true;
  }
  return false;
}

/**
 * Batched matmul (batch > 1, no transpose flags) by the SIMD kernel: the stock kernel runs these on
 * a ~1.5 GFLOP/s loop, and one XNNPACK call per matrix spends more on setup than on arithmetic.
 */
function batchedMatMul(stock: tf.KernelFunc, be: HeapBackend): tf.KernelFunc {
  return (args) => {
    const a = args.inputs.a as tf.TensorInfo;
    const b = args.inputs.b as tf.TensorInfo;
    const { transposeA, transposeB } = args.attrs as unknown as { transposeA: boolean; transposeB: boolean };
    const lead = a.shape.slice(0, -2);
    const batch = lead.reduce((x, y) => x * y, 1);
    if (
      batch <= 1 ||
      transposeA ||
      transposeB ||
      a.shape.length !== b.shape.length ||
      !tf.util.arraysEqual(lead, b.shape.slice(0, -2)) ||
      a.dtype !== 'float32'
    ) {
      return stock(args);
    }
    const [m, k] = a.shape.slice(-2);
    const n = b.shape[b.shape.length - 1];
    const out = be.makeOutput([...lead, m, n], 'float32');
    const ptr = (t: tf.TensorInfo) => be.dataIdMap.get(t.dataId).memoryOffset;
    simdFor(be as unknown as WasmLike).batch_matmul(ptr(a), ptr(b), ptr(out), batch, m, k, n);
    return out;
  };
}

/**
 * GatherV2 along axis 0 of float32 rows (token and position gathers) as heap row copies: the stock
 * wasm kernel moves ~80M floats/s, a copyWithin per row ~10x more.
 */
function gatherRows(stock: tf.KernelFunc, be: HeapBackend): tf.KernelFunc {
  return (args) => {
    const x = args.inputs.x as tf.TensorInfo;
    const idx = args.inputs.indices as tf.TensorInfo;
    const { axis, batchDims } = args.attrs as unknown as { axis: number; batchDims: number };
    if (x.dtype !== 'float32' || idx.dtype !== 'int32' || batchDims !== 0 || (axis !== 0 && axis !== -x.shape.length))
      return stock(args);
    const rows = x.shape[0];
    const width = x.shape.slice(1).reduce((a, b) => a * b, 1);
    const out = be.makeOutput([...idx.shape, ...x.shape.slice(1)], 'float32');
    const heap = new Float32Array(be.wasm.asm.memory.buffer);
    const ids = new Int32Array(
      be.wasm.asm.memory.buffer,
      be.dataIdMap.get(idx.dataId).memoryOffset,
      idx.shape.reduce((a, b) => a * b, 1),
    );
    const src = be.dataIdMap.get(x.dataId).memoryOffset / 4;
    let dst = be.dataIdMap.get(out.dataId).memoryOffset / 4;
    for (let i = 0; i < ids.length; i++, dst += width) {
      const r = ids[i];
      if (r < 0 || r >= rows) throw new RangeError(`gather: index ${r} is outside [0, ${rows})`);
      heap.copyWithin(dst, src + r * width, src + (r + 1) * width);
    }
    return out;
  };
}

let wasmKernelsRegistered = false;

function registerWasmKernels(): void {
  if (wasmKernelsRegistered) return;
  wasmKernelsRegistered = true;
  const transpose: tf.KernelFunc = ({ inputs, backend, attrs }) => {
    const be = backend as unknown as HeapBackend;
    const x = inputs.x as tf.TensorInfo;
    const perm = (attrs as unknown as { perm: number[] }).perm;
    const out = be.makeOutput(
      perm.map((p) => x.shape[p]),
      x.dtype,
    );
    if (x.dtype === 'float32' && transposeOnHeap(be, x, out, perm)) return out;
    // makeOutput can grow the heap, which detaches earlier views: take views after it.
    transposeInto(be.typedArrayFromHeap(x), x.shape, perm, be.typedArrayFromHeap(out));
    return out;
  };
  const segmentSum: tf.KernelFunc = ({ inputs, backend, attrs }) => {
    const be = backend as unknown as HeapBackend;
    const x = inputs.x as tf.TensorInfo;
    const ids = inputs.segmentIds as tf.TensorInfo;
    const numSegments = (attrs as unknown as { numSegments: number }).numSegments;
    const rows = ids.shape.reduce((a, b) => a * b, 1);
    const rowShape = x.shape.slice(ids.shape.length);
    const width = rowShape.reduce((a, b) => a * b, 1);
    const out = be.makeOutput([numSegments, ...rowShape], x.dtype);
    const dst = be.typedArrayFromHeap(out);
    const src = be.typedArrayFromHeap(x);
    const seg = be.typedArrayFromHeap(ids);
    dst.fill(0);
    for (let r = 0; r < rows; r++) {
      const s = seg[r];
      if (s < 0 || s >= numSegments) continue;
      const so = r * width;
      const d = s * width;
      for (let j = 0; j < width; j++) dst[d + j] += src[so + j];
    }
    return out;
  };
  const identity: tf.KernelFunc = ({ inputs, backend }) => {
    const x = inputs.x as tf.TensorInfo;
    (backend as unknown as { incRef(id: tf.DataId): void }).incRef(x.dataId);
    return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
  };
  const stockMatMul = tf.getKernel('BatchMatMul', 'wasm')!.kernelFunc;
  const stockGather = tf.getKernel('GatherV2', 'wasm')!.kernelFunc;
  for (const [kernelName, kernelFunc] of [
    ['BatchMatMul', batchedMatMul(stockMatMul, tf.backend() as unknown as HeapBackend)],
    ['GatherV2', gatherRows(stockGather, tf.backend() as unknown as HeapBackend)],
    ['Identity', identity],
    ['Transpose', transpose],
    ['UnsortedSegmentSum', segmentSum],
  ] as const) {
    if (tf.getKernel(kernelName, 'wasm')) tf.unregisterKernel(kernelName, 'wasm');
    tf.registerKernel({ kernelName, backendName: 'wasm', kernelFunc });
  }
}

let active: BackendName | null = null;

/**
 * Activates a backend. `tensorflow` needs @tensorflow/tfjs-node-gpu or @tensorflow/tfjs-node,
 * which the user installs where their native library can be downloaded.
 */
export async function useBackend(name: BackendName): Promise<void> {
  if (active === name && tf.getBackend() === name) return;
  if (name === 'wasm') {
    // The wasm backend runs single-threaded under Node (its threaded build needs browser workers).
    await import('@tensorflow/tfjs-backend-wasm');
    const before = {
      exc: process.listeners('uncaughtException'),
      rej: process.listeners('unhandledRejection'),
    };
    if (!(await tf.setBackend('wasm'))) throw new Error('the wasm backend failed to initialise');
    // After initialisation: the wasm kernels' setup must still run for the ones we replace,
    // since other wasm kernels call them directly.
    registerWasmKernels();
    // The emscripten module installs process-wide handlers that rethrow with its whole source; drop them.
    for (const l of process.listeners('uncaughtException'))
      if (!before.exc.includes(l)) process.removeListener('uncaughtException', l);
    for (const l of process.listeners('unhandledRejection'))
      if (!before.rej.includes(l)) process.removeListener('unhandledRejection', l);
  } else if (name === 'cpu') {
    await import('@tensorflow/tfjs-backend-cpu');
    if (!(await tf.setBackend('cpu'))) throw new Error('the cpu backend failed to initialise');
  } else {
    const errors: string[] = [];
    for (const pkg of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']) {
      try {
        await import(pkg);
        break;
      } catch (e) {
        errors.push(`${pkg}: ${(e as Error).message.split('\n')[0]}`);
      }
    }
    if (errors.length === 2 || !(await tf.setBackend('tensorflow'))) {
      throw new Error(
        `--backend tensorflow needs @tensorflow/tfjs-node-gpu or @tensorflow/tfjs-node installed (npm install one of them where it can download libtensorflow).\n  ${errors.join('\n  ')}`,
      );
    }
  }
  await tf.ready();
  // PROD silences the expected "overriding gradient" warnings and skips debug checks.
  tf.env().set('PROD', true);
  registerFusedKernels();
  registerGradientOverrides();
  active = name;
}
