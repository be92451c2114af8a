/**
 * `Ops` that emit ONNX nodes: the same model definition (vit.ts) the trainer runs in TF.js becomes
 * an inference graph (parameters as initializers, read from a ParamStore on first use) or the
 * forward half of a training graph (parameters as graph inputs, differentiated by autodiff.ts).
 */
import type { Ops } from '../model/ops.ts';
import type { ModelConfig } from '../model/presets.ts';
import type { ParamSpec } from '../model/vit.ts';
import { ParamStore } from '../model/params.ts';
import { type GraphBuilder, float } from './graph.ts';

/** Parameters fed at run time: input `${prefix}${name}` for each spec. */
export interface ParamInputs {
  prefix: string;
  specs: ParamSpec[];
}

/** End bound for "slice to the end" (INT64_MAX is not representable exactly in a JS number). */
const TO_END = 2 ** 62;

export class OnnxOps implements Ops<string> {
  private readonly declared = new Set<string>();

  constructor(
    readonly g: GraphBuilder,
    private readonly params: ParamStore | ParamInputs,
    private readonly model: ModelConfig,
  ) {}

  param(name: string): string {
    const fed = !(this.params instanceof ParamStore);
    const full = fed ? `${(this.params as ParamInputs).prefix}${name}` : name;
    if (!this.declared.has(full)) {
      const spec = this.params.specs.find((s) => s.name === name);
      if (!spec) throw new RangeError(`unknown parameter '${name}'`);
      if (fed) this.g.input(full, 'float32', spec.shape);
      else this.g.initializer(full, (this.params as ParamStore).view(name).slice(), spec.shape);
      this.declared.add(full);
    }
    return full;
  }

  /** Names of the parameters used so far, as graph inputs or initializers, in first-use order. */
  get used(): string[] {
    return [...this.declared];
  }

  constant(key: string, data: Float32Array, shape: number[]): string {
    return this.g.hasInitializer(key) ? key : this.g.initializer(key, data, shape);
  }

  linear(x: string, weight: string, bias: string): string {
    // Gemm on a 2-D view fuses the bias into the product (one pass less than MatMul + Add).
    const [inDim, out] = this.params.specs.find((s) => s.name === weight)!.shape;
    const x2 = this.g.op('Reshape', [x, this.g.ints([-1, inDim])]);
    const y = this.g.op('Gemm', [x2, this.param(weight), this.param(bias)]);
    const shape = this.g.op('Concat', [this.g.op('Shape', [x], { start: 0, end: -1 }), this.g.ints([out])], {
      axis: 0,
    });
    return this.g.op('Reshape', [y, shape]);
  }

  layerNorm(x: string, eps: number, gamma?: string, beta?: string): string {
    let scale: string;
    let shift: string;
    if (gamma && beta) {
      scale = this.param(gamma);
      shift = this.param(beta);
    } else {
      // No affine: only the target normalisation, over encoder tokens of width dim.
      const d = this.model.dim;
      scale = this.constant(`ln_ones_${d}`, new Float32Array(d).fill(1), [d]);
      shift = this.constant(`ln_zeros_${d}`, new Float32Array(d), [d]);
    }
    // Mean and InvStdDev are outputs too: the backward rule reuses them.
    return this.g.node('LayerNormalization', [x, scale, shift], { axis: -1, epsilon: float(eps) }, 3)[0];
  }

  gelu(x: string): string {
    const erf = this.g.op('Erf', [this.g.op('Mul', [x, this.g.scalar(Math.SQRT1_2)])]);
    return this.g.op('Mul', [this.g.op('Mul', [x, this.g.scalar(0.5)]), this.g.op('Add', [erf, this.g.scalar(1)])]);
  }

  softmax(x: string): string {
    return this.g.op('Softmax', [x], { axis: -1 });
  }

  add(a: string, b: string): string {
    return this.g.op('Add', [a, b]);
  }

  scale(x: string, s: number): string {
    return this.g.op('Mul', [x, this.g.scalar(s)]);
  }

  addScalar(x: string, s: number): string {
    return this.g.op('Add', [x, this.g.scalar(s)]);
  }

  matmul(a: string, b: string): string {
    return this.g.op('MatMul', [a, b]);
  }

  reshape(x: string, shape: number[]): string {
    return this.g.op('Reshape', [x, this.g.ints(shape)]);
  }

  transpose(x: string, perm: number[]): string {
    return this.g.op('Transpose', [x], { perm });
  }

  concat(xs: string[], axis: number): string {
    return this.g.op('Concat', xs, { axis });
  }

  splitHeads(qkv: string, heads: number): [string, string, string] {
    const x = this.transpose(this.reshape(qkv, [0, 0, 3, heads, -1]), [2, 0, 3, 1, 4]);
    const parts = this.g.node('Split', [x, this.g.ints([1, 1, 1])], { axis: 0 }, 3);
    return parts.map((p) => this.g.op('Squeeze', [p, this.g.ints([0])])) as [string, string, string];
  }

  lastTokens(x: string, like: string): string {
    const k = this.g.op('Shape', [like], { start: 1, end: 2 });
    return this.g.op('Slice', [x, this.g.op('Neg', [k]), this.g.ints([TO_END]), this.g.ints([1])]);
  }

  repeatBatch(x: string, times: number): string {
    return times === 1 ? x : this.concat(new Array<string>(times).fill(x), 0);
  }

  gatherTokens(x: string, idx: string): string {
    // Row b·N + idx of x viewed as [B·N, D]: a plain Gather, whose gradient is one ScatterND.
    const g = this.g;
    const b = g.op('Squeeze', [g.op('Shape', [idx], { start: 0, end: 1 }), g.ints([0])]);
    const n = g.op('Shape', [x], { start: 1, end: 2 });
    const offsets = g.op('Unsqueeze', [g.op('Mul', [g.op('Range', [g.int(0), b, g.int(1)]), n]), g.ints([1])]);
    const rows = g.op('Reshape', [x, g.op('Concat', [g.ints([-1]), g.op('Shape', [x], { start: 2 })], { axis: 0 })]);
    return g.op('Gather', [rows, g.op('Add', [idx, offsets])], { axis: 0 });
  }

  gatherRows(table: string, idx: string): string {
    return this.g.op('Gather', [table, idx], { axis: 0 });
  }

  patchify(images: string, patch: number): string {
    // [B, C, H, W] → [B, C, H/p, p, W/p, p] → [B, H/p, W/p, p, p, C] → [B, N, p·p·C]
    const cols = this.model.imageSize / patch;
    const x = this.reshape(images, [0, 0, -1, patch, cols, patch]);
    return this.reshape(this.transpose(x, [0, 2, 4, 3, 5, 1]), [0, -1, patch * patch * this.model.channels]);
  }
}
