/**
 * Reverse-mode differentiation of an ONNX graph as it is being built: walks the recorded forward
 * nodes backwards and emits, for each op, its vector-Jacobian product in standard ONNX ops
 * (opset 17). Only the ops the model and its losses use have rules; anything else on a path to a
 * differentiated input is an error, not a silent zero.
 *
 * Shapes are dynamic (batch, context and target lengths vary per step), so a rule that needs a
 * shape takes it from a float forward tensor with a `Shape` node and feeds it straight to a
 * shape input (Expand, Reshape, Slice): no int64 arithmetic, no Sum, Size or ConstantOfShape.
 * Those have no WebGPU kernels, and each would move tensors between the device and the host in
 * the middle of a step (test/gpu/placement.ts). Ranks are static and inferred here.
 */
import { type GraphBuilder, type NodeRecord, TO_END } from './graph.ts';

/** Ops whose outputs carry no gradient (integers, shapes). */
const NON_DIFFERENTIABLE = new Set(['Shape', 'Range', 'Cast', 'Equal', 'Less', 'Greater']);

/** End bound for "to the end" (INT64_MAX is not representable exactly in a JS number). */

/** Zeros shaped like x, on x's device (Expand of a scalar; ConstantOfShape has no WebGPU kernel). */
function zerosLike(g: GraphBuilder, x: string): string {
  return g.op('Expand', [g.scalar(0), g.op('Shape', [x])]);
}

type Rule = (c: RuleContext) => (string | undefined)[];

class RuleContext {
  constructor(
    readonly g: GraphBuilder,
    readonly node: NodeRecord,
    /** Gradient of each output (zeros filled in for the ones that got none). */
    readonly dy: string[],
    readonly needs: (i: number) => boolean,
    readonly rank: (name: string) => number,
    readonly producer: (name: string) => NodeRecord | undefined,
  ) {}

  get x(): string[] {
    return this.node.inputs;
  }

  op(op: string, inputs: string[], attrs: NodeRecord['attrs'] = {}): string {
    return this.g.op(op, inputs, attrs);
  }

  mul(a: string, b: string): string {
    return this.op('Mul', [a, b]);
  }

  shape(x: string): string {
    return this.op('Shape', [x]);
  }

  /**
   * Sum dy down to the shape of x, which may have been broadcast in the forward op. Statically
   * shaped [1, …, 1, n] tensors (biases, norms, the mask token) are reduced; activations have the
   * output's shape in this model; any other broadcast is refused rather than guessed.
   */
  unbroadcast(dy: string, x: string): string {
    const dims = this.g.dims.get(x);
    if (!dims || dims.length === 0) return dy;
    const lead = dims.slice(0, -1);
    const last = dims[dims.length - 1];
    if (lead.every((d) => d === 1) && typeof last === 'number') {
      const rows = this.op('Reshape', [dy, this.g.ints([-1, last])]);
      return this.op('Reshape', [
        this.op('ReduceSum', [rows, this.g.ints([0])], { keepdims: 0 }),
        this.g.ints(dims as number[]),
      ]);
    }
    if (dims.includes(1)) throw new Error(`autodiff: broadcast of ${x} [${dims}] is not supported (only [1, …, 1, n])`);
    return dy;
  }

  /** x with its last two axes swapped; reuses the forward input when x is itself such a transpose. */
  swapLast(x: string): string {
    const p = this.producer(x);
    const r = this.rank(x);
    const perm = [...Array(r).keys()];
    [perm[r - 2], perm[r - 1]] = [perm[r - 1], perm[r - 2]];
    if (p?.op === 'Transpose' && JSON.stringify(p.attrs.perm) === JSON.stringify(perm)) return p.inputs[0];
    return this.op('Transpose', [x], { perm });
  }

  zerosLike(x: string): string {
    return zerosLike(this.g, x);
  }
}

const axisOf = (c: RuleContext, x: string, axis: number) => (axis < 0 ? c.rank(x) + axis : axis);

const RULES: Record<string, Rule> = {
  Identity: (c) => [c.dy[0]],
  Add: (c) => [
    c.needs(0) ? c.unbroadcast(c.dy[0], c.x[0]) : undefined,
    c.needs(1) ? c.unbroadcast(c.dy[0], c.x[1]) : undefined,
  ],
  Sub: (c) => [
    c.needs(0) ? c.unbroadcast(c.dy[0], c.x[0]) : undefined,
    c.needs(1) ? c.unbroadcast(c.op('Neg', [c.dy[0]]), c.x[1]) : undefined,
  ],
  Mul: (c) => [
    c.needs(0) ? c.unbroadcast(c.mul(c.dy[0], c.x[1]), c.x[0]) : undefined,
    c.needs(1) ? c.unbroadcast(c.mul(c.dy[0], c.x[0]), c.x[1]) : undefined,
  ],
  Neg: (c) => [c.op('Neg', [c.dy[0]])],
  Div: (c) => {
    if (c.needs(1)) throw new Error('autodiff: Div by a differentiated value is not supported');
    return [c.unbroadcast(c.op('Div', [c.dy[0], c.x[1]]), c.x[0])];
  },
  Gelu: (c) => {
    // d/dx x·Φ(x) = Φ(x) + x·φ(x) = ½·(1 + erf(a) + 2/√π · a·exp(−a²)) with a = x/√2, the
    // constant riding in the exponent: ten elementwise passes, as many as the chain rule through
    // the five-op form, with nothing of the forward kept alive for it.
    const a = c.mul(c.x[0], c.g.scalar(Math.SQRT1_2));
    const e = c.op('Erf', [a]);
    const pdf = c.op('Exp', [c.op('Sub', [c.g.scalar(Math.log(2 / Math.sqrt(Math.PI))), c.mul(a, a)])]);
    const slope = c.op('Add', [c.op('Add', [e, c.mul(a, pdf)]), c.g.scalar(1)]);
    return [c.mul(c.mul(c.dy[0], c.g.scalar(0.5)), slope)];
  },
  Relu: (c) => [c.mul(c.dy[0], c.op('Cast', [c.op('Greater', [c.x[0], c.g.scalar(0)])], { to: 1 }))],
  Sqrt: (c) => [c.op('Div', [c.mul(c.dy[0], c.g.scalar(0.5)), c.node.outputs[0]])],
  Reciprocal: (c) => {
    const y = c.node.outputs[0];
    return [c.op('Neg', [c.mul(c.dy[0], c.mul(y, y))])];
  },
  Cos: (c) => [c.op('Neg', [c.mul(c.dy[0], c.op('Sin', [c.x[0]]))])],
  Sin: (c) => [c.mul(c.dy[0], c.op('Cos', [c.x[0]]))],
  Clip: (c) => {
    // Pass-through where the forward value was not clipped.
    const inside = c.op('Cast', [c.op('Equal', [c.node.outputs[0], c.x[0]])], { to: 1 });
    return [c.mul(c.dy[0], inside)];
  },
  LogSoftmax: (c) => {
    if (axisOf(c, c.x[0], c.node.attrs.axis as number) !== c.rank(c.x[0]) - 1)
      throw new Error('autodiff: LogSoftmax over a non-last axis');
    const sum = c.op('ReduceSum', [c.dy[0], c.g.ints([-1])], { keepdims: 1 });
    return [c.op('Sub', [c.dy[0], c.mul(c.op('Exp', [c.node.outputs[0]]), sum)])];
  },
  Softmax: (c) => {
    if (axisOf(c, c.x[0], c.node.attrs.axis as number) !== c.rank(c.x[0]) - 1)
      throw new Error('autodiff: Softmax over a non-last axis');
    const p = c.node.outputs[0];
    const dot = c.op('ReduceSum', [c.mul(c.dy[0], p), c.g.ints([-1])], { keepdims: 1 });
    return [c.mul(p, c.op('Sub', [c.dy[0], dot]))];
  },
  LayerNormalization: (c) => {
    const [x, gamma, beta] = c.x;
    const [, mean, inv] = c.node.outputs;
    if (!mean || !inv)
      throw new Error('autodiff: LayerNormalization must be emitted with its Mean and InvStdDev outputs');
    if (axisOf(c, x, c.node.attrs.axis as number) !== c.rank(x) - 1)
      throw new Error('autodiff: LayerNormalization over a non-last axis');
    const dy = c.dy[0];
    const xhat = c.mul(c.op('Sub', [x, mean]), inv);
    const dxhat = c.mul(dy, gamma);
    const m1 = c.op('ReduceMean', [dxhat], { axes: [-1], keepdims: 1 });
    const m2 = c.op('ReduceMean', [c.mul(dxhat, xhat)], { axes: [-1], keepdims: 1 });
    const dx = c.mul(inv, c.op('Sub', [c.op('Sub', [dxhat, m1]), c.mul(xhat, m2)]));
    return [
      c.needs(0) ? dx : undefined,
      c.needs(1) ? c.unbroadcast(c.mul(dy, xhat), gamma) : undefined,
      c.needs(2) ? c.unbroadcast(dy, beta) : undefined,
    ];
  },
  MatMul: (c) => {
    const [a, b] = c.x;
    const dy = c.dy[0];
    const ra = c.rank(a);
    const rb = c.rank(b);
    if (rb === 2 && ra > 2) {
      // [..., k] · [k, n]: the weight gradient sums over every leading axis, as one 2-D product.
      const k = c.g.dims.get(b);
      const rows = (t: string, n: number | string) => c.op('Reshape', [t, c.g.ints([-1, n as number])]);
      return [
        c.needs(0) ? c.op('MatMul', [dy, c.swapLast(b)]) : undefined,
        c.needs(1) ? c.op('Gemm', [rows(a, k?.[0] ?? -1), rows(dy, k?.[1] ?? -1)], { transA: 1 }) : undefined,
      ];
    }
    if (ra !== rb) throw new Error(`autodiff: MatMul of ranks ${ra} and ${rb}`);
    return [
      c.needs(0) ? c.op('MatMul', [dy, c.swapLast(b)]) : undefined,
      c.needs(1) ? c.op('MatMul', [c.swapLast(a), dy]) : undefined,
    ];
  },
  Reshape: (c) => {
    const known = c.g.gradShapes.get(c.node.outputs[0]);
    return [c.op('Reshape', [c.dy[0], known ? c.g.ints(known) : c.shape(c.x[0])])];
  },
  Transpose: (c) => {
    const perm = c.node.attrs.perm as number[];
    const inverse = perm.map((_, i) => perm.indexOf(i));
    return [c.op('Transpose', [c.dy[0]], { perm: inverse })];
  },
  Squeeze: (c) => [c.op('Unsqueeze', [c.dy[0], c.x[1]])],
  Unsqueeze: (c) => [c.op('Squeeze', [c.dy[0], c.x[1]])],
  Concat: (c) => {
    const axis = axisOf(c, c.x[0], c.node.attrs.axis as number);
    // Copies of one tensor (repeatBatch): equal parts, summed by the caller's accumulation.
    if (c.x.every((x) => x === c.x[0])) {
      const parts = c.g.node('Split', [c.dy[0]], { axis }, c.x.length);
      return parts.map((p, i) => (i === 0 || c.needs(i) ? p : undefined));
    }
    if (c.x.length !== 2) throw new Error('autodiff: Concat of more than two different tensors');
    // Two parts: cut where the first ends, its length read off its own shape.
    const cut = c.op('Shape', [c.x[0]], { start: axis, end: axis + 1 });
    const axes = c.g.ints([axis]);
    return [
      c.needs(0) ? c.op('Slice', [c.dy[0], c.g.ints([0]), cut, axes]) : undefined,
      c.needs(1) ? c.op('Slice', [c.dy[0], cut, c.g.ints([TO_END]), axes]) : undefined,
    ];
  },
  Split: (c) => [c.op('Concat', c.dy, { axis: c.node.attrs.axis as number })],
  Slice: (c) => {
    // Only "the last k along one axis" (lastTokens): the gradient pads zeros in front.
    const [x, , ends, axes, steps] = c.x;
    const endVals = c.g.intValues.get(ends);
    const axisVals = axes ? c.g.intValues.get(axes) : undefined;
    if (endVals?.length !== 1 || endVals[0] < 2 ** 60 || !axisVals || axisVals.length !== 1 || steps) {
      throw new Error('autodiff: only Slice to the end along one axis is supported');
    }
    const r = c.rank(x);
    const axis = axisVals[0] < 0 ? r + axisVals[0] : axisVals[0];
    const dimOf = (t: string) => c.op('Shape', [t], { start: axis, end: axis + 1 });
    const front = c.op('Sub', [dimOf(x), dimOf(c.dy[0])]);
    const zeros = (n: number) => c.g.ints(new Array(n).fill(0));
    const parts = [axis > 0 ? zeros(axis) : '', front, zeros(r - axis - 1 + r)].filter((p) => p !== '');
    const pads = c.op('Concat', parts, { axis: 0 });
    return [c.op('Pad', [c.dy[0], pads])];
  },
  Gather: (c) => {
    if ((c.node.attrs.axis ?? 0) !== 0) throw new Error('autodiff: Gather along a non-zero axis');
    const [table, idx] = c.x;
    const at = c.op('Unsqueeze', [idx, c.g.ints([-1])]);
    return [c.op('ScatterND', [c.zerosLike(table), at, c.dy[0]], { reduction: 'add' })];
  },
  GatherND: (c) => {
    if ((c.node.attrs.batch_dims ?? 0) !== 0) throw new Error('autodiff: GatherND with batch_dims');
    const [data, idx] = c.x;
    return [c.op('ScatterND', [c.zerosLike(data), idx, c.dy[0]], { reduction: 'add' })];
  },
  ReduceMean: (c) => {
    const x = c.x[0];
    const { keepdims = 1 } = c.node.attrs as { keepdims?: number };
    const axes = c.node.attrs.axes as number[] | undefined;
    let dy = c.dy[0];
    if (!keepdims && axes) dy = c.op('Unsqueeze', [dy, c.g.ints(axes)]);
    // The count of averaged elements, as a float: summing ones keeps it on the device.
    const ones = c.op('Expand', [c.g.scalar(1), c.shape(x)]);
    const count = c.op('ReduceSum', [ones, ...(axes ? [c.g.ints(axes)] : [])], { keepdims: axes ? 1 : 0 });
    return [c.op('Expand', [c.op('Div', [dy, count]), c.shape(x)])];
  },
  ReduceSum: (c) => {
    const x = c.x[0];
    const { keepdims = 1 } = c.node.attrs as { keepdims?: number };
    let dy = c.dy[0];
    if (!keepdims && c.x[1]) dy = c.op('Unsqueeze', [dy, c.x[1]]);
    return [c.op('Expand', [dy, c.shape(x)])];
  },
};

/** Static ranks of the values of a graph under construction. */
class Ranks {
  private readonly memo = new Map<string, number>();
  constructor(
    private readonly g: GraphBuilder,
    private readonly producers: Map<string, NodeRecord>,
  ) {}

  of = (name: string): number => {
    const known = this.memo.get(name) ?? this.g.dims.get(name)?.length;
    if (known !== undefined) return known;
    const n = this.producers.get(name);
    if (!n) throw new Error(`autodiff: no rank for ${name}`);
    const r = this.infer(n);
    this.memo.set(name, r);
    return r;
  };

  private ints(x: string): number[] {
    const v = this.g.intValues.get(x);
    if (!v) throw new Error(`autodiff: expected a constant, got ${x}`);
    return v;
  }

  /** Length of a 1-D int64 tensor: a constant, a `Shape` (with start/end), or a Concat of those. */
  private length(x: string): number {
    const v = this.g.intValues.get(x);
    if (v) return v.length;
    const n = this.producers.get(x);
    if (n?.op === 'Concat') return n.inputs.reduce((t, p) => t + this.length(p), 0);
    if (n?.op === 'Shape') {
      const r = this.of(n.inputs[0]);
      const { start = 0, end = r } = n.attrs as { start?: number; end?: number };
      return (end < 0 ? r + end : end) - (start < 0 ? r + start : start);
    }
    throw new Error(`autodiff: cannot tell the length of ${x}`);
  }

  private infer(n: NodeRecord): number {
    const r0 = () => this.of(n.inputs[0]);
    switch (n.op) {
      case 'Add':
      case 'Sub':
      case 'Mul':
      case 'Div':
      case 'MatMul':
        return Math.max(...n.inputs.map(this.of));
      case 'Reshape':
      case 'Expand':
        return this.length(n.inputs[1]);
      case 'Transpose':
        return (n.attrs.perm as number[]).length;
      case 'Squeeze':
        return r0() - this.ints(n.inputs[1]).length;
      case 'Unsqueeze':
        return r0() + this.ints(n.inputs[1]).length;
      case 'Gather':
        return r0() - 1 + this.of(n.inputs[1]);
      case 'GatherND': // indices [..., 1]: one index into the first axis
        return r0() + this.of(n.inputs[1]) - 2;
      case 'ReduceMean':
      case 'ReduceSum': {
        if (n.attrs.keepdims !== 0) return r0();
        const axes =
          n.op === 'ReduceMean'
            ? (n.attrs.axes as number[] | undefined)
            : n.inputs[1]
              ? this.ints(n.inputs[1])
              : undefined;
        return axes ? r0() - axes.length : 0;
      }
      case 'Shape':
        return 1;
      default:
        return r0(); // elementwise, normalisation, softmax, concat, split, slice, pad
    }
  }
}

/**
 * Emits the gradients of scalar `loss` with respect to each name in `wrt` (graph inputs) and
 * returns them by name. Forward nodes are those recorded so far.
 */
export function gradients(g: GraphBuilder, loss: string, wrt: string[]): Map<string, string> {
  const forward = g.records.slice();
  const producers = new Map<string, NodeRecord>();
  for (const n of forward) for (const o of n.outputs) producers.set(o, n);
  const ranks = new Ranks(g, producers);

  const live = new Set(wrt);
  for (const n of forward) {
    if (!NON_DIFFERENTIABLE.has(n.op) && n.inputs.some((i) => live.has(i))) for (const o of n.outputs) live.add(o);
  }
  if (!live.has(loss)) throw new Error('autodiff: the loss does not depend on any differentiated input');

  const pending = new Map<string, string[]>([[loss, [g.scalar(1)]]]);
  const total = (name: string): string | undefined => {
    const parts = pending.get(name);
    if (!parts) return undefined;
    // A chain of Adds, not one Sum: Sum has no WebGPU kernel.
    const sum = parts.reduce((a, b) => g.op('Add', [a, b]));
    pending.set(name, [sum]);
    return sum;
  };

  for (let i = forward.length - 1; i >= 0; i--) {
    const n = forward[i];
    if (!n.outputs.some((o) => pending.has(o)) || !n.inputs.some((x) => live.has(x))) continue;
    const rule = RULES[n.op];
    if (!rule) throw new Error(`autodiff: no gradient rule for ${n.op}`);
    // Outputs nobody used get zeros only where a rule reads them (Split concatenates all of them).
    const dys = n.outputs.map((o, k) => total(o) ?? (k === 0 || n.op === 'Split' ? zerosLike(g, o) : ''));
    const c = new RuleContext(
      g,
      n,
      dys,
      (k) => live.has(n.inputs[k]),
      ranks.of,
      (x) => producers.get(x),
    );
    rule(c).forEach((dx, k) => {
      const x = n.inputs[k];
      if (dx === undefined || !live.has(x)) return;
      pending.set(x, [...(pending.get(x) ?? []), dx]);
    });
  }

  const out = new Map<string, string>();
  for (const w of wrt) {
    const dw = total(w);
    if (!dw) throw new Error(`autodiff: ${w} does not affect the loss`);
    out.set(w, dw);
  }
  return out;
}
