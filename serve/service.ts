/** The loaded model and everything requests share: embedder, batcher, probe head, limits, metrics. */
import type { Device } from '../runtime/device-kind.ts';
import { Embedder } from '../runtime/embedder.ts';
import { Gallery } from './gallery/gallery.ts';
import { Batcher, type Embedded } from './batcher.ts';
import { decodeImage, type DecodeLimits } from '../runtime/decode.ts';
import { Gate } from '../runtime/gate.ts';
import { ApiError, fromRuntime } from './errors.ts';
import { RuntimeError } from '../runtime/errors.ts';
import { createMetrics, type Metrics } from './metrics.ts';
import { probeSchema, type ProbeHead } from '../format/probe.ts';
import { checkReadout, readoutDim } from '../format/readout.ts';
import type { Manifest } from '../format/manifest.ts';
import type { ImageInput } from './routes/inputs.ts';

export interface ServiceOptions {
  maxBytes: number;
  maxPixels: number;
  maxImages: number;
  /** Largest request body after decompression (JSON and multipart; a raw image is bounded by maxBytes). */
  maxRequestBytes: number;
  maxBatch: number;
  maxWaitMs: number;
  maxQueue: number;
  threads: number;
  /** Where the encoder runs. */
  device: Device;
  /** Directory of a persistent patch gallery (optional). */
  gallery?: string;
  /** Required on mutating gallery routes when set. */
  apiKey?: string;
}

export const defaultServiceOptions: ServiceOptions = {
  maxBytes: 10 * 1024 * 1024,
  maxPixels: 40_000_000,
  maxImages: 64,
  maxRequestBytes: 64 * 1024 * 1024,
  maxBatch: 32,
  maxWaitMs: 5,
  maxQueue: 512,
  threads: 1,
  device: 'cpu',
};

export type Outcome = { index: number; result: Embedded } | { index: number; error: ApiError };

export class Service {
  ready = false;
  readonly metrics: Metrics = createMetrics();
  readonly batcher: Batcher;
  readonly probe?: ProbeHead;
  readonly limits: DecodeLimits;
  /** At most maxPixels of images are being decoded at once, whatever the number of requests. */
  readonly decodeGate: Gate;
  gallery?: Gallery;

  private constructor(
    readonly embedder: Embedder,
    readonly options: ServiceOptions,
  ) {
    const m = embedder.manifest;
    this.limits = { maxBytes: options.maxBytes, maxPixels: options.maxPixels };
    this.decodeGate = new Gate(options.maxPixels);
    this.batcher = new Batcher(
      (imgs) => embedder.embed(imgs),
      m.embeddingDim,
      m.patches.rows * m.patches.cols,
      options,
      {
        batch: (size, sec) => {
          this.metrics.batchSize.observe(size);
          this.metrics.stage.observe({ stage: 'inference' }, sec);
        },
        queue: (n) => this.metrics.queue.set(n),
      },
    );
    if (m.files.probe) {
      const probe = probeSchema.parse(JSON.parse(new TextDecoder().decode(embedder.files!.file('probe'))));
      const want = readoutDim(probe.readout, m.embeddingDim);
      if (probe.dim !== want)
        throw new Error(
          `probe.json: a '${probe.readout}' head over ${m.embeddingDim}-d embeddings has ${want} inputs, not ${probe.dim}`,
        );
      checkReadout(probe.readout, m.patches.rows, m.patches.cols);
      this.probe = probe;
    }
  }

  get manifest(): Manifest {
    return this.embedder.manifest;
  }

  static async open(modelDir: string, options: Partial<ServiceOptions> = {}): Promise<Service> {
    const o = { ...defaultServiceOptions, ...options };
    const s = new Service(await Embedder.open(modelDir, { threads: o.threads, device: o.device }), o);
    if (o.gallery) s.gallery = Gallery.open(o.gallery, s.manifest.id, s.manifest.embeddingDim, (m) => console.error(m));
    // Ready means a real forward pass worked, not only that the files loaded.
    const size = s.manifest.preprocess.size;
    const probe = await s.batcher.submit(new Uint8Array(size * size * 3).fill(128));
    if (!probe.pooled.every(Number.isFinite))
      throw new Error('the encoder produced non-finite embeddings on a gray image');
    s.ready = true;
    return s;
  }

  /** Decodes and embeds every input; each gets its result or its own error. */
  async embedAll(items: ImageInput[]): Promise<Outcome[]> {
    return Promise.all(
      items.map(async (it): Promise<Outcome> => {
        if (it.error) return { index: it.index, error: it.error };
        try {
          const t0 = performance.now();
          const rgb = await decodeImage(it.bytes!, this.limits, this.manifest.preprocess, this.decodeGate);
          this.metrics.stage.observe({ stage: 'decode' }, (performance.now() - t0) / 1000);
          return { index: it.index, result: await this.batcher.submit(rgb) };
        } catch (e) {
          const error =
            e instanceof ApiError
              ? e
              : e instanceof RuntimeError
                ? fromRuntime(e)
                : new ApiError('internal', (e as Error).message);
          return { index: it.index, error };
        }
      }),
    );
  }

  async close(): Promise<void> {
    this.ready = false;
    await this.batcher.drain();
    this.gallery?.close();
    await this.embedder.close();
  }
}
