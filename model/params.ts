/**
 * Parameters as one flat Float32Array per network, with named views. The optimizer, the EMA and
 * checkpoints work on the flat buffer; engines read and write the views.
 */
import type { ParamSpec } from './vit.ts';
import { Rng } from './rng.ts';

export class ParamStore {
  readonly data: Float32Array;
  readonly offsets = new Map<string, number>();
  readonly sizes = new Map<string, number>();

  constructor(
    readonly specs: ParamSpec[],
    data?: Float32Array,
  ) {
    let n = 0;
    for (const s of specs) {
      const size = s.shape.reduce((a, b) => a * b, 1);
      this.offsets.set(s.name, n);
      this.sizes.set(s.name, size);
      n += size;
    }
    if (data && data.length !== n)
      throw new RangeError(`parameter buffer has ${data.length} values, the model needs ${n}`);
    this.data = data ?? new Float32Array(n);
  }

  get size(): number {
    return this.data.length;
  }

  view(name: string): Float32Array {
    const off = this.offsets.get(name);
    if (off === undefined) throw new RangeError(`unknown parameter '${name}'`);
    return this.data.subarray(off, off + this.sizes.get(name)!);
  }

  clone(): ParamStore {
    return new ParamStore(this.specs, this.data.slice());
  }

  /** 1 where weight decay applies, 0 elsewhere (biases, norms, mask token). */
  decayMask(): Uint8Array {
    const m = new Uint8Array(this.size);
    for (const s of this.specs)
      if (s.decay) m.fill(1, this.offsets.get(s.name)!, this.offsets.get(s.name)! + this.sizes.get(s.name)!);
    return m;
  }

  /** Initialises every parameter from its spec; each tensor draws from its own seeded stream. */
  static init(specs: ParamSpec[], seed: number, stream: string): ParamStore {
    const p = new ParamStore(specs);
    specs.forEach((s, i) => {
      const v = p.view(s.name);
      if (s.init.kind === 'ones') v.fill(1);
      else if (s.init.kind === 'trunc') {
        const rng = Rng.for(seed, stream, i);
        for (let j = 0; j < v.length; j++) v[j] = rng.truncNormal(s.init.std);
      }
    });
    return p;
  }
}
