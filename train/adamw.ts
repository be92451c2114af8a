/**
 * AdamW (decoupled weight decay, Loshchilov & Hutter) over a flat parameter buffer, in plain JS so
 * both engines share it and its state is checkpointed as two arrays.
 */
export interface AdamWConfig {
  beta1: number;
  beta2: number;
  eps: number;
}

export const defaultAdamW: AdamWConfig = { beta1: 0.9, beta2: 0.999, eps: 1e-8 };

export class AdamW {
  readonly m: Float32Array;
  readonly v: Float32Array;
  /** Number of updates applied so far (for bias correction). */
  t = 0;

  /**
   * `lrScale`: a learning-rate multiplier per element (layer-wise decay in fine-tuning), which
   * scales the decoupled decay too, as it is lr × wd; without it every element takes the step's lr.
   */
  constructor(
    size: number,
    private readonly decayMask: Uint8Array,
    readonly config: AdamWConfig = defaultAdamW,
    private readonly lrScale?: Float32Array,
  ) {
    if (lrScale && lrScale.length !== size)
      throw new RangeError(`lrScale has ${lrScale.length} values, the parameters ${size}`);
    this.m = new Float32Array(size);
    this.v = new Float32Array(size);
  }

  /**
   * Counts one more update and returns its scalars: the bias-corrected step size, 1 / (1 − β₂ᵗ)
   * and the decoupled decay. Wherever the update runs (here, or as a graph on a device).
   */
  advance(lr: number, weightDecay: number): { stepSize: number; invC2: number; decay: number } {
    const { beta1, beta2 } = this.config;
    this.t++;
    return { stepSize: lr / (1 - beta1 ** this.t), invC2: 1 / (1 - beta2 ** this.t), decay: lr * weightDecay };
  }

  /** One update of `params` in place with gradient `grad` (already averaged over micro-batches). */
  step(params: Float32Array, grad: Float32Array, lr: number, weightDecay: number): void {
    const { beta1, beta2, eps } = this.config;
    const { stepSize, invC2, decay } = this.advance(lr, weightDecay);
    const { m, v } = this;
    const mask = this.decayMask;
    const scale = this.lrScale;
    if (scale) {
      for (let i = 0; i < params.length; i++) {
        const g = grad[i];
        const mi = (m[i] = beta1 * m[i] + (1 - beta1) * g);
        const vi = (v[i] = beta2 * v[i] + (1 - beta2) * g * g);
        let p = params[i];
        if (mask[i]) p -= decay * scale[i] * p;
        params[i] = p - (stepSize * scale[i] * mi) / (Math.sqrt(vi * invC2) + eps);
      }
      return;
    }
    for (let i = 0; i < params.length; i++) {
      const g = grad[i];
      const mi = (m[i] = beta1 * m[i] + (1 - beta1) * g);
      const vi = (v[i] = beta2 * v[i] + (1 - beta2) * g * g);
      let p = params[i];
      if (mask[i]) p -= decay * p;
      params[i] = p - (stepSize * mi) / (Math.sqrt(vi * invC2) + eps);
    }
  }
}
