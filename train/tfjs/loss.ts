/**
 * The I-JEPA objective and the optional SIGReg regulariser, in TF.js.
 * Both are means: the loss scale must not depend on how many target patches a batch happened to sample.
 */
import * as tf from '@tensorflow/tfjs-core';
import { KNOTS, sigregKnots, type LossKind } from '../../model/objective.ts';

/** Mean over every predicted element of the squared error, or of smooth-L1 with β = 1. */
export function predictionLoss(pred: tf.Tensor, target: tf.Tensor, kind: LossKind): tf.Scalar {
  const diff = tf.sub(pred, target);
  if (kind === 'mse') return tf.mean(tf.square(diff));
  // c·(d − c/2) with c = clip(d, −1, 1) is ½d² inside [−1, 1] and |d| − ½ outside; unlike a
  // where(|d| < 1, …) it has a TF.js gradient (Less has none) and the same form as the ONNX graph.
  const c = tf.clipByValue(diff, -1, 1);
  return tf.mean(tf.mul(c, tf.sub(diff, tf.mul(c, 0.5))));
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
