/** A model package's encoder as a function from preprocessed RGB images to embeddings. */
import { readPackage } from '../format/package.ts';
import type { Manifest } from '../format/manifest.ts';
import { normalizeChw } from '../format/preprocess.ts';
import { OnnxModel } from './model.ts';
import type { SessionOptions } from './session.ts';

export interface Embeddings {
  /** [n, D] mean of the patch embeddings. */
  pooled: Float32Array;
  /** [n, rows·cols, D] patch embeddings, raster order. */
  tokens: Float32Array;
  count: number;
}

export class Embedder {
  private constructor(
    readonly manifest: Manifest,
    private readonly encoder: OnnxModel,
    /** The package's files, when opened from a package directory. */
    readonly files?: ReturnType<typeof readPackage>,
  ) {}

  /** An embedder over another encoder graph with the same geometry (e.g. random weights, for baselines). */
  static async fromGraph(manifest: Manifest, encoder: Uint8Array, o: SessionOptions = {}): Promise<Embedder> {
    return new Embedder(manifest, await OnnxModel.load(encoder, o));
  }

  static async open(dir: string, o: SessionOptions = {}): Promise<Embedder> {
    const pkg = readPackage(dir);
    return new Embedder(pkg.manifest, await OnnxModel.load(pkg.file('encoder'), o), pkg);
  }

  /** images: RGB HWC bytes at the package's input size. */
  async embed(images: Uint8Array[]): Promise<Embeddings> {
    const p = this.manifest.preprocess;
    const per = 3 * p.size * p.size;
    const input = new Float32Array(images.length * per);
    images.forEach((rgb, i) => normalizeChw(rgb, p, input, i * per));
    const out = await this.encoder.run({ images: { data: input, dims: [images.length, 3, p.size, p.size] } });
    return { pooled: out.pooled.data, tokens: out.tokens.data, count: images.length };
  }

  async close(): Promise<void> {
    await this.encoder.release();
  }
}
