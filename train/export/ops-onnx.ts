/**
 * `Ops` that emit ONNX nodes: the same model definition (vit.ts) the trainer runs in TF.js becomes
 * an inference graph. Parameters become initializers, read from a ParamStore on first use.
 */
import type { Ops } from '../model/ops.ts';
import type { ModelConfig } from '../model/presets.ts';
import type { ParamStore } from '../params.ts';
import { GraphBuilder, float } from './graph.ts';

/** End bound for "slice to the end" (INT64_MAX is not representable exactly in a JS number). */
const TO_END = 2 ** 62;

export class OnnxOps implements Ops<string> {
  constructor(
    readonly g: GraphBuilder,
    private readonly params: ParamStore,
    private readonly model: ModelConfig,
  ) {}

  param(name: string): string {
    if (!this.g.hasInitializer(name)) {
      const spec = this.params.specs.find((s) => s.name === name);
      if (!spec) throw new RangeError(`unknown parameter '${name}'`);
      this.g.initializer(name, this.params.view(name).slice(), spec.shape);
    }
    return name;
  }

  constant(key: string, data: Float32Array, shape: number[]): string {
    return this.g.hasInitializer(key) ? key : this.g.initializer(key, data, shape);
  }

  linear(x: string, weight: string, bias: string): string {
    return this.g.op('Add', [this.g.op('MatMul', [x, this.param(weight)]), this.param(bias)]);
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
    return this.g.op('LayerNormalization', [x, scale, shift], { axis: -1, epsilon: float(eps) });
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
    return this.g.op('GatherND', [x, this.g.op('Unsqueeze', [idx, this.g.ints([-1])])], { batch_dims: 1 });
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
