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

  constructor(
    size: number,
    private readonly decayMask: Uint8Array,
    readonly config: AdamWConfig = defaultAdamW,
  ) {
    this.m = new Float32Array(size);
    this.v = new Float32Array(size);
  }

  /** One update of `params` in place with gradient `grad` (already averaged over micro-batches). */
  step(params: Float32Array, grad: Float32Array, lr: number, weightDecay: number): void {
    const { beta1, beta2, eps } = this.config;
    this.t++;
    const c1 = 1 - beta1 ** this.t;
    const c2 = 1 - beta2 ** this.t;
    const { m, v } = this;
    const mask = this.decayMask;
    const stepSize = lr / c1;
    const invC2 = 1 / c2;
    const decay = lr * weightDecay;
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
