import * as tf from '@tensorflow/tfjs-core';
import { useBackend, type BackendName } from '../train/tfjs/backend.ts';
import type { ModelConfig } from '../model/presets.ts';

/** A model small enough for tests: 16×16 images, 4×4 grid of 4×4 patches. */
export const tinyModel: ModelConfig = {
  imageSize: 16,
  patchSize: 4,
  channels: 3,
  dim: 32,
  depth: 2,
  heads: 2,
  mlpRatio: 4,
  predDim: 16,
  predDepth: 1,
  predHeads: 2,
  eps: 1e-6,
};

export async function onBackend<T>(name: BackendName, f: () => T | Promise<T>): Promise<T> {
  await useBackend(name);
  await tf.setBackend(name);
  return f();
}

/** max |a − b| / max |b|: relative to the tensor's scale, so tiny gradients are not let off. */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let d = 0;
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]));
    s = Math.max(s, Math.abs(b[i]));
  }
  return d / Math.max(s, 1e-30);
}

/** Max |a - b| / max(1, |b|) over the elements. */
export function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(b[i])));
  return m;
}

export function randomArray(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = ((s / 4294967296) * 2 - 1) * scale;
  }
  return out;
}
