/**
 * The only onnxruntime-node import: sessions for the package's graphs.
 */
import * as ort from 'onnxruntime-node';

export type Feeds = Record<string, { data: Float32Array | BigInt64Array; dims: number[] }>;

export class OnnxModel {
  private constructor(private readonly session: ort.InferenceSession) {}

  static async load(model: string | Uint8Array, threads = 1): Promise<OnnxModel> {
    const opts: ort.InferenceSession.SessionOptions = { intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all' };
    // create() is overloaded per argument type; both forms load the same graph.
    const session = await (ort.InferenceSession.create as (m: string | Uint8Array, o: ort.InferenceSession.SessionOptions) => Promise<ort.InferenceSession>)(model, opts);
    return new OnnxModel(session);
  }

  get inputNames(): readonly string[] {
    return this.session.inputNames;
  }

  async run(feeds: Feeds): Promise<Record<string, { data: Float32Array; dims: readonly number[] }>> {
    const inputs: Record<string, ort.Tensor> = {};
    for (const [k, v] of Object.entries(feeds)) inputs[k] = new ort.Tensor(v.data instanceof Float32Array ? 'float32' : 'int64', v.data, v.dims);
    const out = await this.session.run(inputs);
    const result: Record<string, { data: Float32Array; dims: readonly number[] }> = {};
    for (const [k, t] of Object.entries(out)) result[k] = { data: t.data as Float32Array, dims: t.dims };
    return result;
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}
