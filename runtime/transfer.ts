/**
 * Tensors that live on a device between runs (WebGPU buffers). onnxruntime-node can create them
 * only as a session's outputs and read them back only as another session's CPU outputs (calling
 * getData() on one aborts the process), so both directions go through an Identity graph of any
 * rank. On the CPU the same calls are plain copies, so code written against them runs anywhere.
 */
import onnxProto from 'onnx-proto';
import type { Device } from './device.ts';
import { createSession, Tensor, type Session } from './session.ts';

const { onnx } = onnxProto;

/** Identity over a float32 tensor of any shape. */
export function identityGraph(): Uint8Array {
  const value = (name: string) =>
    onnx.ValueInfoProto.create({ name, type: { tensorType: { elemType: onnx.TensorProto.DataType.FLOAT } } });
  const model = onnx.ModelProto.create({
    irVersion: 8,
    producerName: 'ijepa',
    opsetImport: [{ domain: '', version: 17 }],
    graph: {
      name: 'identity',
      node: [onnx.NodeProto.create({ opType: 'Identity', input: ['x'], output: ['y'], name: 'identity' })],
      input: [value('x')],
      output: [value('y')],
    },
  });
  return onnx.ModelProto.encode(model).finish();
}

export class DeviceTransfer {
  private constructor(
    readonly device: Device,
    private readonly up: Session | null,
    private readonly down: Session | null,
  ) {}

  static async create(device: Device): Promise<DeviceTransfer> {
    if (device === 'cpu') return new DeviceTransfer(device, null, null);
    const graph = identityGraph();
    const [up, down] = await Promise.all([
      createSession(graph, { device, deviceOutputs: 'all' }),
      createSession(graph, { device }),
    ]);
    return new DeviceTransfer(device, up, down);
  }

  /** A device copy of host data (on the CPU: a tensor over a copy of it). */
  async upload(data: Float32Array, dims: readonly number[]): Promise<Tensor> {
    const host = new Tensor('float32', data.slice(), dims);
    if (!this.up) return host;
    return (await this.up.run({ x: host })).y;
  }

  /** The values of a device tensor, copied into `into` when given. */
  async download(t: Tensor, into?: Float32Array): Promise<Float32Array> {
    const data = this.down ? ((await this.down.run({ x: t })).y.data as Float32Array) : (t.data as Float32Array);
    if (!into) return data;
    into.set(data);
    return into;
  }

  async release(): Promise<void> {
    await Promise.all([this.up?.release(), this.down?.release()]);
  }
}

/** Frees a tensor's device memory (garbage collection does not); host tensors need nothing. */
export function release(t: Tensor): void {
  if (t.location === 'gpu-buffer') t.dispose();
}
