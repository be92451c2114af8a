/**
 * A package's predictor over its context encoder: the embeddings the model expects behind hidden
 * patches, from the visible ones, as in training (the context encoder sees only the visible
 * patches; the predictor places a query at each hidden position).
 */
import type { Manifest } from '../format/manifest.ts';
import { normalizePatches } from '../format/preprocess.ts';
import type { readPackage } from '../format/package.ts';
import { OnnxModel } from './model.ts';
import type { SessionOptions } from './session.ts';

const int64 = (a: number[]) => BigInt64Array.from(a, (v) => BigInt(v));

export class Predictor {
  private constructor(
    private readonly manifest: Manifest,
    private readonly context: OnnxModel,
    private readonly predictor: OnnxModel,
  ) {}

  /** The package's predictor, or null when it has none (or no context encoder to feed it). */
  static async open(pkg: ReturnType<typeof readPackage>, o: SessionOptions = {}): Promise<Predictor | null> {
    const f = pkg.manifest.files;
    if (!f.predictor || !f.context) return null;
    const encoder = pkg.file('encoder');
    const context = await OnnxModel.load(pkg.file('context'), {
      ...o,
      externalData: [{ path: f.encoder.path, data: encoder }],
    });
    return new Predictor(pkg.manifest, context, await OnnxModel.load(pkg.file('predictor'), o));
  }

  /** rgb: one image at the package's input size; hidden: patch indices (raster order). Returns [hidden, D]. */
  async predict(rgb: Uint8Array, hidden: number[]): Promise<Float32Array> {
    const m = this.manifest;
    const n = m.patches.rows * m.patches.cols;
    const pd = m.patches.size * m.patches.size * 3;
    const patches = new Float32Array(n * pd);
    normalizePatches(rgb, m.preprocess, m.patches.size, patches);
    const gone = new Set(hidden);
    const visible = [...Array(n).keys()].filter((i) => !gone.has(i));
    const l = visible.length;
    const t = hidden.length;
    const { context } = await this.context.run({
      patches: { data: patches, dims: [1, n, pd] },
      ctx_idx: { data: int64(visible), dims: [1, l] },
      ctx_mask: { data: new Float32Array(l).fill(1), dims: [1, l] },
    });
    const { pred } = await this.predictor.run({
      context: { data: context.data, dims: [1, l, m.embeddingDim] },
      ctx_idx: { data: int64(visible), dims: [1, l] },
      key_mask: { data: new Float32Array(l + t).fill(1), dims: [1, l + t] },
      tgt_idx: { data: int64(hidden), dims: [1, t] },
    });
    return pred.data;
  }

  async close(): Promise<void> {
    await Promise.all([this.context.release(), this.predictor.release()]);
  }
}
