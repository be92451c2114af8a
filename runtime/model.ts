/** A graph with named float32 / int64 feeds and float32 outputs: the package encoder, predictor and figures' graphs. */
import { createSession, Tensor, type Session, type SessionOptions } from './session.ts';

/** Host arrays by input name; `run` wraps each in a Tensor (train/ort's `Feeds` are Tensors already). */
export type HostFeeds = Record<string, { data: Float32Array | BigInt64Array; dims: number[] }>;

export class OnnxModel {
  private constructor(private readonly session: Session) {}

  static async load(model: string | Uint8Array, o: SessionOptions = {}): Promise<OnnxModel> {
    // One thread unless asked: a server runs several models and requests side by side. An
    // explicit `threads: undefined` still means one.
    return new OnnxModel(await createSession(model, { ...o, threads: o.threads ?? 1 }));
  }

  get inputNames(): readonly string[] {
    return this.session.inputNames;
  }

  async run(feeds: HostFeeds): Promise<Record<string, { data: Float32Array; dims: readonly number[] }>> {
    const inputs: Record<string, Tensor> = {};
    for (const [k, v] of Object.entries(feeds))
      inputs[k] = new Tensor(v.data instanceof Float32Array ? 'float32' : 'int64', v.data, v.dims);
    const out = await this.session.run(inputs);
    const result: Record<string, { data: Float32Array; dims: readonly number[] }> = {};
    for (const [k, t] of Object.entries(out)) result[k] = { data: t.data as Float32Array, dims: t.dims };
    return result;
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}
