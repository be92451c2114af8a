/**
 * The I-JEPA objective and the optional SIGReg regulariser, in TF.js.
 * Both are means: the loss scale must not depend on how many target patches a batch happened to sample.
 */
import * as tf from '@tensorflow/tfjs-core';
import { Rng } from '../model/rng.ts';

export type LossKind = 'mse' | 'smooth-l1';

/** Mean over every predicted element of the squared error, or of smooth-L1 with β = 1. */
export function predictionLoss(pred: tf.Tensor, target: tf.Tensor, kind: LossKind): tf.Scalar {
  const diff = tf.sub(pred, target);
  if (kind === 'mse') return tf.mean(tf.square(diff));
  // c·(d − c/2) with c = clip(d, −1, 1) is ½d² inside [−1, 1] and |d| − ½ outside; unlike a
  // where(|d| < 1, …) it has a TF.js gradient (Less has none) and the same form as the ONNX graph.
  const c = tf.clipByValue(diff, -1, 1);
  return tf.mean(tf.mul(c, tf.sub(diff, tf.mul(c, 0.5))));
}

/** Knots on t ≥ 0 for the Epps–Pulley integral; the integrand is even in t. */
export const KNOTS = 17;
const T_MAX = 4;

/** The knots t, the standard normal's characteristic function e^{−t²/2} at them, and trapezoid weights (both signs of t) times that weight. */
export function sigregKnots(): { t: number[]; gauss: number[]; weights: number[] } {
  const t = Array.from({ length: KNOTS }, (_, i) => (T_MAX * i) / (KNOTS - 1));
  const dt = T_MAX / (KNOTS - 1);
  const gauss = t.map((v) => Math.exp(-0.5 * v * v));
  return { t, gauss, weights: t.map((v, i) => gauss[i] * dt * (i === 0 || i === KNOTS - 1 ? 1 : 2)) };
}

/** Random unit directions [D, P] (column-major per direction), fresh for each optimizer step; both engines draw the same. */
export function sigregDirections(d: number, p: number, seed: number, step: number): Float32Array {
  const rng = Rng.for(seed, 'sigreg', step);
  const a = new Float32Array(d * p);
  for (let j = 0; j < p; j++) {
    let norm = 0;
    for (let i = 0; i < d; i++) norm += (a[i * p + j] = rng.normal()) ** 2;
    for (let i = 0; i < d; i++) a[i * p + j] /= Math.sqrt(norm);
  }
  return a;
}

/**
 * SIGReg-style regulariser: project features x [n, D] on the columns of `directions` [D, P]
 * (unit vectors), and measure each 1-D projection against N(0, 1) with the Epps–Pulley statistic
 * n·∫ |φ̂(t) − e^{−t²/2}|² e^{−t²/2} dt, averaged over projections.
 */
export function sigreg(x: tf.Tensor2D, directions: tf.Tensor2D): tf.Scalar {
  const n = x.shape[0];
  const proj = tf.matMul(x, directions); // [n, P]
  const { t: ts, gauss: g, weights: w } = sigregKnots();
  const t = tf.tensor(ts, [KNOTS, 1, 1]);
  const tx = tf.mul(t, tf.expandDims(proj, 0)); // [K, n, P]
  const re = tf.mean(tf.cos(tx), 1); // [K, P]
  const im = tf.mean(tf.sin(tx), 1);
  const gauss = tf.tensor(g, [KNOTS, 1]);
  const err = tf.add(tf.square(tf.sub(re, gauss)), tf.square(im)); // [K, P]
  const integral = tf.sum(tf.mul(err, tf.tensor(w, [KNOTS, 1])), 0); // [P]
  return tf.mul(tf.mean(integral), n);
}
