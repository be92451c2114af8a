/**
 * The objective's definitions shared by both engines and the emitted graphs: the prediction-loss
 * kinds, and SIGReg's quadrature knots and per-step random directions.
 */
import { Rng } from './rng.ts';

export type LossKind = 'mse' | 'smooth-l1';

/** Knots on t ≥ 0 for the Epps–Pulley integral; the integrand is even in t. */
export const KNOTS = 17;
/** LeJEPA's integration range. */
const T_MAX = 3;

/** The knots t, the standard normal's characteristic function e^{−t²/2} at them, and trapezoid weights (both signs of t) times that weight. */
export function sigregKnots(): { t: number[]; gauss: number[]; weights: number[] } {
  const t = Array.from({ length: KNOTS }, (_, i) => (T_MAX * i) / (KNOTS - 1));
  const dt = T_MAX / (KNOTS - 1);
  const gauss = t.map((v) => Math.exp(-0.5 * v * v));
  return { t, gauss, weights: t.map((_v, i) => gauss[i] * dt * (i === 0 || i === KNOTS - 1 ? 1 : 2)) };
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
