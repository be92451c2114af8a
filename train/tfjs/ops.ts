/**
 * `Ops` on TF.js tensors, for training. Written against @tensorflow/tfjs-core so every backend
 * (wasm, cpu, tfjs-node) runs the same model. Where the backend has the fused kernels of
 * kernels.ts they are used; otherwise composite ops with the same maths (the parity test
 * checks one against the other).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Ops } from '../../model/ops.ts';
import { fused, fusedAvailable } from './kernels.ts';

type T = tf.Tensor;

/** LayerNorm over the last axis of 2-D x with an analytic backward (one pass instead of autodiff's many kernels). */
function layerNorm2d(eps: number) {
  return tf.customGrad(((x: T, g: T, b: T, save: tf.GradSaveFunc) => {
    const mean = tf.mean(x, -1, true);
    const xc = tf.sub(x, mean);
    const inv = tf.rsqrt(tf.add(tf.mean(tf.square(xc), -1, true), eps));
    const xhat = tf.mul(xc, inv);
    save([xhat, inv, g]);
    return {
      value: tf.add(tf.mul(xhat, g), b),
      gradFunc: (dy: T | T[], saved: T[]) => {
        const d = dy as T;
        const [xh, iv, gs] = saved;
        const dxhat = tf.mul(d, gs);
        const m1 = tf.mean(dxhat, -1, true);
        const m2 = tf.mean(tf.mul(dxhat, xh), -1, true);
        const dx = tf.mul(iv, tf.sub(tf.sub(dxhat, m1), tf.mul(xh, m2)));
        return [dx, tf.sum(tf.mul(d, xh), 0), tf.sum(d, 0)];
      },
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]) as (x: T, g: T, b: T) => T;
}

const SQRT1_2 = Math.SQRT1_2;
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

const gelu = tf.customGrad(((x: T, save: tf.GradSaveFunc) => {
  const cdf = tf.mul(0.5, tf.add(1, tf.erf(tf.mul(x, SQRT1_2))));
  save([x, cdf]);
  return {
    value: tf.mul(x, cdf),
    gradFunc: (dy: T | T[], saved: T[]) => {
      const [xs, c] = saved;
      const pdf = tf.mul(INV_SQRT_2PI, tf.exp(tf.mul(tf.square(xs), -0.5)));
      return [tf.mul(dy as T, tf.add(c, tf.mul(xs, pdf)))];
    },
  };
}) as unknown as Parameters<typeof tf.customGrad>[0]) as (x: T) => T;

/** Resolves ONNX reshape semantics (0 = copy the input dim, -1 = infer) to a TF.js shape. */
export function resolveShape(input: number[], shape: number[]): number[] {
  return shape.map((d, i) => (d === 0 ? input[i] : d));
}

export class TfOps implements Ops<T> {
  private readonly norms = new Map<number, (x: T, g: T, b: T) => T>();
  private readonly ones = new Map<number, { g: T; b: T }>();
  private readonly useFused: boolean;

  constructor(
    private readonly lookup: (name: string) => T,
    private readonly constants: Map<string, T> = new Map(),
    useFused?: boolean,
  ) {
    this.useFused = useFused ?? fusedAvailable();
  }

  param(name: string): T {
    return this.lookup(name);
  }

  constant(key: string, data: Float32Array, shape: number[]): T {
    let c = this.constants.get(key);
    if (!c) {
      c = tf.keep(tf.tensor(data, shape));
      this.constants.set(key, c);
    }
    return c;
  }

  linear(x: T, weight: string, bias: string): T {
    const w = this.param(weight);
    const b = this.param(bias);
    const x2 = tf.reshape(x, [-1, w.shape[0]]);
    const y = this.useFused ? fused.linear(x2, w, b) : tf.add(tf.matMul(x2, w), b);
    return tf.reshape(y, [...x.shape.slice(0, -1), w.shape[1]!]);
  }

  layerNorm(x: T, eps: number, gamma?: string, beta?: string): T {
    const d = x.shape[x.rank - 1];
    let g: T, b: T;
    if (gamma && beta) {
      g = this.param(gamma);
      b = this.param(beta);
    } else {
      let o = this.ones.get(d);
      if (!o) this.ones.set(d, (o = { g: tf.keep(tf.ones([d])), b: tf.keep(tf.zeros([d])) }));
      ({ g, b } = o);
    }
    if (this.useFused) return fused.layerNorm(x, g, b, eps);
    let fn = this.norms.get(eps);
    if (!fn) this.norms.set(eps, (fn = layerNorm2d(eps)));
    return tf.reshape(fn(tf.reshape(x, [-1, d]), g, b), x.shape);
  }

  batchNorm(x: T, eps: number, gamma: string, beta: string): T {
    const { mean, variance } = tf.moments(x, 0, true);
    const xhat = tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, eps)));
    return tf.add(tf.mul(xhat, this.param(gamma)), this.param(beta));
  }

  relu(x: T): T {
    return tf.relu(x);
  }

  gelu(x: T): T {
    return this.useFused ? fused.gelu(x) : gelu(x);
  }

  softmax(x: T): T {
    return this.useFused ? fused.softmax(x) : tf.softmax(x);
  }

  add(a: T, b: T): T {
    return tf.add(a, b);
  }

  scale(x: T, s: number): T {
    return tf.mul(x, s);
  }

  addScalar(x: T, s: number): T {
    return tf.add(x, s);
  }

  matmul(a: T, b: T): T {
    return tf.matMul(a, b);
  }

  reshape(x: T, shape: number[]): T {
    return tf.reshape(x, resolveShape(x.shape, shape));
  }

  transpose(x: T, perm: number[]): T {
    return tf.transpose(x, perm);
  }

  concat(xs: T[], axis: number): T {
    return tf.concat(xs, axis);
  }

  splitHeads(qkv: T, heads: number): [T, T, T] {
    if (this.useFused) return fused.splitHeads(qkv, heads);
    const [b, l, d3] = qkv.shape;
    const x = tf.transpose(tf.reshape(qkv, [b, l, 3, heads, d3 / 3 / heads]), [2, 0, 3, 1, 4]);
    return tf.unstack(x, 0) as [T, T, T];
  }

  mergeHeads(x: T, heads: number): T {
    const [b, , l, hd] = x.shape;
    return tf.reshape(tf.transpose(x, [0, 2, 1, 3]), [b, l, heads * hd]);
  }

  lastTokens(x: T, like: T): T {
    const k = like.shape[1]!;
    return tf.slice(x, [0, x.shape[1]! - k, 0], [-1, k, -1]);
  }

  repeatBatch(x: T, times: number): T {
    // concat, not tile: wasm's Tile kernel is ~100x slower than a copy.
    return times === 1 ? x : tf.concat(new Array<T>(times).fill(x), 0);
  }

  gatherTokens(x: T, idx: T): T {
    // Flattened gather with per-image offsets: gather(batchDims=1) returns wrong rows on wasm.
    const [b, n, d] = x.shape;
    const k = idx.shape[1]!;
    const offsets = tf.tensor2d(
      Int32Array.from({ length: b }, (_, i) => i * n),
      [b, 1],
      'int32',
    );
    const flat = tf.reshape(tf.add(idx, offsets), [-1]);
    return tf.reshape(tf.gather(tf.reshape(x, [b * n, d]), flat), [b, k, d]);
  }

  gatherRows(table: T, idx: T): T {
    return tf.gather(table, idx);
  }

  patchify(images: T, patch: number): T {
    const [b, c, h, w] = images.shape;
    const r = h / patch;
    const q = w / patch;
    const x = tf.reshape(images, [b, c, r, patch, q, patch]);
    return tf.reshape(tf.transpose(x, [0, 2, 4, 3, 5, 1]), [b, r * q, patch * patch * c]);
  }
}
