/**
 * `Ops` that emit ONNX nodes: the same model definition (vit.ts) the trainer runs in TF.js becomes
 * an inference graph (parameters as initializers, read from a ParamStore on first use) or the
 * forward half of a training graph (parameters as graph inputs, differentiated by autodiff.ts).
 */
import type { Ops } from '../model/ops.ts';
import type { ModelConfig } from '../model/presets.ts';
import type { ParamSpec } from '../model/vit.ts';
import { ParamStore } from '../model/params.ts';
import { type GraphBuilder, TO_END, float } from './graph.ts';

/** Parameters fed at run time: input `${prefix}${name}` for each spec. */
export interface ParamInputs {
  prefix: string;
  specs: ParamSpec[];
}

/** Parameters stored in another file (ONNX external data): where each one's bytes are. */
export interface ExternalParams {
  location: string;
  specs: ParamSpec[];
  at: Map<string, { offset: number; length: number }>;
}

/**
 * Index inputs a training graph is fed beside its patch indices, computed on the host, so that
 * selecting tokens needs no int64 arithmetic in the graph (no WebGPU kernels exist for it):
 * `rows[idx]` [B, K, 1] holds b·N + idx[b, k] for gatherTokens(x, idx), and `tail[like]` [K, 1]
 * holds the positions of the last K tokens for lastTokens(x, like).
 */
export interface IndexInputs {
  rows: Record<string, string>;
  tail: Record<string, string>;
}

export class OnnxOps implements Ops<string> {
  private readonly declared = new Set<string>();
  /** Last-axis widths of gathered values that are not encoder tokens (MAE's pixel targets). */
  private readonly widths = new Map<string, number>();

  constructor(
    readonly g: GraphBuilder,
    private readonly params: ParamStore | ParamInputs | ExternalParams,
    private readonly model: ModelConfig,
    private readonly indices?: IndexInputs,
  ) {}

  param(name: string): string {
    const p = this.params;
    const full = 'prefix' in p ? `${p.prefix}${name}` : name;
    if (!this.declared.has(full)) {
      const spec = p.specs.find((s) => s.name === name);
      if (!spec) throw new RangeError(`unknown parameter '${name}'`);
      if (p instanceof ParamStore) this.g.initializer(full, p.view(name).slice(), spec.shape);
      else if ('prefix' in p) this.g.input(full, 'float32', spec.shape);
      else {
        const at = p.at.get(name);
        if (!at) throw new RangeError(`parameter '${name}' is not in ${p.location}`);
        this.g.externalInitializer(full, spec.shape, p.location, at.offset, at.length);
      }
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
    // MatMul over the leading axes, not Gemm on a 2-D view: reshaping back would need the input's
    // leading dims as int64 arithmetic, which runs on the host under WebGPU.
    return this.g.op('Add', [this.g.op('MatMul', [x, this.param(weight)]), this.param(bias)]);
  }

  layerNorm(x: string, eps: number, gamma?: string, beta?: string): string {
    let scale: string;
    let shift: string;
    if (gamma && beta) {
      scale = this.param(gamma);
      shift = this.param(beta);
    } else {
      // No affine: the target normalisations, over encoder tokens of width dim or gathered patches.
      const d = this.widthOf(x);
      scale = this.constant(`ln_ones_${d}`, new Float32Array(d).fill(1), [d]);
      shift = this.constant(`ln_zeros_${d}`, new Float32Array(d), [d]);
    }
    // Mean and InvStdDev are outputs too: the backward rule reuses them.
    return this.g.node('LayerNormalization', [x, scale, shift], { axis: -1, epsilon: float(eps) }, 3)[0];
  }

  batchNorm(x: string, eps: number, gamma: string, beta: string): string {
    const g = this.g;
    const scale = this.param(gamma);
    const features = g.dims.get(scale)![0] as number;
    // Composed of standard ops; the statistics are declared [1, F] so that autodiff.ts sums their
    // gradients over the batch they were broadcast to.
    const batchMean = (t: string) => {
      const s = g.op('ReduceMean', [t], { axes: [0], keepdims: 1 });
      g.dims.set(s, [1, features]);
      return s;
    };
    const centred = g.op('Sub', [x, batchMean(x)]);
    const variance = g.op('Add', [batchMean(g.op('Mul', [centred, centred])), g.scalar(eps)]);
    g.dims.set(variance, [1, features]);
    const std = g.op('Sqrt', [variance]);
    g.dims.set(std, [1, features]);
    const inv = g.op('Reciprocal', [std]);
    g.dims.set(inv, [1, features]);
    return g.op('Add', [g.op('Mul', [g.op('Mul', [centred, inv]), scale]), this.param(beta)]);
  }

  relu(x: string): string {
    return this.g.op('Relu', [x]);
  }

  gelu(x: string): string {
    // Exact erf GELU as one contrib kernel: as five standard ops it was five passes over the MLP's
    // widest activations, and onnxruntime did not fuse them back.
    return this.g.op('Gelu', [x]);
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

  mergeHeads(x: string, heads: number): string {
    const merged = this.reshape(this.transpose(x, [0, 2, 1, 3]), [0, 0, -1]);
    // Its gradient splits the heads again from constants: a Shape of the transposed heads would be
    // rewritten by onnxruntime into int64 arithmetic, which WebGPU runs on the host.
    this.g.gradShapes.set(merged, [0, 0, heads, -1]);
    return merged;
  }

  lastTokens(x: string, like: string): string {
    const tail = this.indices?.tail[like];
    if (tail) {
      const tokensFirst = [1, 0, 2];
      return this.transpose(this.g.op('GatherND', [this.transpose(x, tokensFirst), tail]), tokensFirst);
    }
    const k = this.g.op('Shape', [like], { start: 1, end: 2 });
    return this.g.op('Slice', [x, this.g.op('Neg', [k]), this.g.ints([TO_END]), this.g.ints([1])]);
  }

  repeatBatch(x: string, times: number): string {
    return times === 1 ? x : this.concat(new Array<string>(times).fill(x), 0);
  }

  /** The last axis of x: a graph input's declared width, a gathered value's, else the encoder's. */
  private widthOf(x: string): number {
    const declared = this.g.dims.get(x)?.at(-1);
    return this.widths.get(x) ?? (typeof declared === 'number' ? declared : this.model.dim);
  }

  gatherTokens(x: string, idx: string): string {
    // Row b·N + idx of x viewed as [B·N, D]: one gather, whose gradient is one ScatterND.
    const g = this.g;
    const fed = this.indices?.rows[idx];
    if (fed) {
      const d = this.widthOf(x);
      const out = g.op('GatherND', [g.op('Reshape', [x, g.ints([-1, d])]), fed]);
      if (d !== this.model.dim) this.widths.set(out, d);
      return out;
    }
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
