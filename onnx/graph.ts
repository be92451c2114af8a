/**
 * A small builder for ONNX graphs (opset 17, IR 8), serialised with onnx-proto. Tensor values are
 * referred to by name; `node` returns the names of a node's outputs.
 */
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;
type Attr = number | number[] | string | { floats: number[] };
export type Dim = number | string;

const ELEM = { float32: onnx.TensorProto.DataType.FLOAT, int64: onnx.TensorProto.DataType.INT64 } as const;
export type ElemType = keyof typeof ELEM;

export const OPSET = 17;

/** End bound for "slice to the end" (INT64_MAX is not representable exactly in a JS number). */
export const TO_END = 2 ** 62;

/**
 * onnxruntime's contrib ops that the graphs use, by domain: each is one kernel on both the CPU
 * and the WebGPU provider where the standard-op form is several passes over the activations.
 */
const CONTRIB: Record<string, string> = { Gelu: 'com.microsoft' };

function attribute(name: string, v: Attr): InstanceType<typeof onnx.AttributeProto> {
  const A = onnx.AttributeProto.AttributeType;
  if (typeof v === 'string')
    return onnx.AttributeProto.create({ name, type: A.STRING, s: new TextEncoder().encode(v) });
  if (Array.isArray(v)) return onnx.AttributeProto.create({ name, type: A.INTS, ints: v });
  if (typeof v === 'object') return onnx.AttributeProto.create({ name, type: A.FLOATS, floats: v.floats });
  return Number.isInteger(v) && !Object.is(v, -0)
    ? onnx.AttributeProto.create({ name, type: A.INT, i: v })
    : onnx.AttributeProto.create({ name, type: A.FLOAT, f: v });
}

/** Marks a float attribute that happens to be integral (e.g. epsilon = 1). */
export const float = (v: number) => ({ float: v });

function valueInfo(name: string, type: ElemType, dims: Dim[]) {
  return onnx.ValueInfoProto.create({
    name,
    type: {
      tensorType: {
        elemType: ELEM[type],
        shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  });
}

export type Attrs = Record<string, Attr | { float: number }>;

/** A node as emitted, kept for reverse-mode differentiation (autodiff.ts). */
export interface NodeRecord {
  op: string;
  inputs: string[];
  outputs: string[];
  attrs: Attrs;
}

export class GraphBuilder {
  private readonly nodes: InstanceType<typeof onnx.NodeProto>[] = [];
  readonly records: NodeRecord[] = [];
  /** Static shapes of graph inputs and initializers; values of int64 initializers. */
  readonly dims = new Map<string, Dim[]>();
  readonly intValues = new Map<string, number[]>();
  /** For some Reshape outputs, their input's shape as a constant (0 copies, -1 infers): what the gradient reshapes to. */
  readonly gradShapes = new Map<string, number[]>();
  private readonly inits: InstanceType<typeof onnx.TensorProto>[] = [];
  private readonly initNames = new Set<string>();
  private readonly inputs: InstanceType<typeof onnx.ValueInfoProto>[] = [];
  private readonly outputs: InstanceType<typeof onnx.ValueInfoProto>[] = [];
  private readonly constCache = new Map<string, string>();
  private counter = 0;
  private readonly domains = new Set<string>();

  constructor(readonly name: string) {}

  fresh(prefix: string): string {
    return `${prefix}_${this.counter++}`;
  }

  input(name: string, type: ElemType, dims: Dim[]): string {
    this.inputs.push(valueInfo(name, type, dims));
    this.dims.set(name, dims);
    return name;
  }

  output(value: string, name: string, type: ElemType, dims: Dim[]): void {
    this.node('Identity', [value], {}, [name]);
    this.outputs.push(valueInfo(name, type, dims));
  }

  node(op: string, inputs: string[], attrs: Attrs = {}, outputs: string[] | number = 1): string[] {
    const outs = typeof outputs === 'number' ? Array.from({ length: outputs }, () => this.fresh(op)) : outputs;
    const attribute_ = Object.entries(attrs).map(([k, v]) =>
      typeof v === 'object' && !Array.isArray(v) && 'float' in v
        ? onnx.AttributeProto.create({ name: k, type: onnx.AttributeProto.AttributeType.FLOAT, f: v.float })
        : attribute(k, v as Attr),
    );
    const domain = CONTRIB[op];
    if (domain) this.domains.add(domain);
    this.nodes.push(
      onnx.NodeProto.create({
        opType: op,
        ...(domain ? { domain } : {}),
        input: inputs,
        output: outs,
        name: this.fresh(op.toLowerCase()),
        attribute: attribute_,
      }),
    );
    this.records.push({ op, inputs, outputs: outs, attrs });
    return outs;
  }

  /** One-output node. */
  op(op: string, inputs: string[], attrs: Attrs = {}): string {
    return this.node(op, inputs, attrs)[0];
  }

  hasInitializer(name: string): boolean {
    return this.initNames.has(name);
  }

  initializer(name: string, data: Float32Array | BigInt64Array, dims: number[]): string {
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice();
    this.inits.push(
      onnx.TensorProto.create({
        name,
        dims,
        dataType: data instanceof Float32Array ? ELEM.float32 : ELEM.int64,
        rawData: bytes,
      }),
    );
    this.initNames.add(name);
    this.dims.set(name, dims);
    if (data instanceof BigInt64Array) this.intValues.set(name, Array.from(data, Number));
    return name;
  }

  /**
   * A float32 initializer whose bytes live in another file of the package (ONNX external data):
   * `length` bytes at `offset` of `location`. The graph that holds the weights is not copied.
   */
  externalInitializer(name: string, dims: number[], location: string, offset: number, length: number): string {
    this.inits.push(
      onnx.TensorProto.create({
        name,
        dims,
        dataType: ELEM.float32,
        dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
        externalData: [
          { key: 'location', value: location },
          { key: 'offset', value: String(offset) },
          { key: 'length', value: String(length) },
        ],
      }),
    );
    this.initNames.add(name);
    this.dims.set(name, dims);
    return name;
  }

  private cached(key: string, make: () => string): string {
    let name = this.constCache.get(key);
    if (!name) this.constCache.set(key, (name = make()));
    return name;
  }

  /** Cached int64 constant (shapes, axes, slice bounds). */
  ints(values: number[]): string {
    return this.cached(`i64:${values.join(',')}`, () =>
      this.initializer(this.fresh('const_i64'), BigInt64Array.from(values.map(BigInt)), [values.length]),
    );
  }

  /** Cached int64 scalar constant. */
  int(v: number): string {
    return this.cached(`i64s:${v}`, () => this.initializer(this.fresh('const_i64'), BigInt64Array.of(BigInt(v)), []));
  }

  /** Cached float32 scalar constant. */
  scalar(v: number): string {
    return this.cached(`f32:${v}`, () => this.initializer(this.fresh('const_f32'), Float32Array.of(v), []));
  }

  toBytes(docString = ''): Uint8Array {
    const model = onnx.ModelProto.create({
      irVersion: 8,
      producerName: 'ijepa',
      docString,
      opsetImport: [{ domain: '', version: OPSET }, ...[...this.domains].map((domain) => ({ domain, version: 1 }))],
      graph: { name: this.name, node: this.nodes, initializer: this.inits, input: this.inputs, output: this.outputs },
    });
    return onnx.ModelProto.encode(model).finish();
  }
}
