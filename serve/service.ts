/** The loaded model and everything requests share: embedder, batcher, probe head, limits, metrics. */
import { availableParallelism } from 'node:os';
import type { Device } from '../runtime/device.ts';
import { Embedder } from '../runtime/embedder.ts';
import { Predictor } from '../runtime/predictor.ts';
import { GARBAGE_BYTES } from './gallery/gallery.ts';
import { openStore } from './gallery/open.ts';
import type { GalleryStore } from './gallery/store.ts';
import { Batcher, type Embedded } from './batcher.ts';
import { decodeInspected, inspectImage, type DecodeLimits, type Inspected } from '../runtime/decode.ts';
import { Gate } from '../runtime/gate.ts';
import { MapLayouts } from './map.ts';
import { ApiError, fromLayer } from './errors.ts';
import { createMetrics, type Metrics } from './metrics.ts';
import { probeSchema, type ProbeHead } from '../format/probe.ts';
import { checkReadout, readoutDim } from '../format/readout.ts';
import type { Manifest } from '../format/manifest.ts';
import { toRgb } from '../format/preprocess.ts';
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
  /**
   * Decoding work the images of one request may add up to, in pixels' worth (runtime/decode.ts
   * decodeCost: a PNG's or JPEG's pixels count once, a WebP's 3 times, an AVIF's 8, and each image
   * adds its rows and its setup). Decoding is the costly part of a request.
   */
  maxRequestPixels: number;
  /** Longest side of an image, in pixels. */
  maxSide: number;
  /** Longest side over shortest side of an image. */
  maxAspect: number;
  /** Images being decoded at once, all requests together. */
  decodeConcurrency: number;
  /** Bytes of request bodies being received at once, all requests together. */
  maxInflightBytes: number;
  /** Embedding values one JSON answer may hold as numbers; more must be asked for as base64 or binary. */
  maxJsonNumbers: number;
  threads: number;
  /** Where the encoder runs. */
  device: Device;
  /** A persistent patch gallery (optional): a directory, or a PostgreSQL URL (postgres://…). */
  gallery?: string;
  /** A gallery built with another encoder re-embeds its stored pictures at start, instead of being refused. */
  reembed?: boolean;
  /** Journal bytes of replaced and deleted gallery images kept (or the live bytes, if more) before it compacts online. */
  galleryGarbageBytes: number;
  /** Required on mutating gallery routes when set. */
  apiKey?: string;
  /** Gallery queries (searches and reconstructions) running at once. */
  maxGalleryQueries: number;
  /** Gallery queries waiting beyond those; more are refused (429). */
  maxGalleryQueue: number;
  /** Gallery images a search scores exactly (MaxSim over all their patches): its cost, whatever the gallery's size. */
  maxSearchCandidates: number;
}

/** A GPU runs a large batch in about the time of a small one: it waits a little longer to fill one. */
export function batchDefaults(device: Device): Pick<ServiceOptions, 'maxBatch' | 'maxWaitMs'> {
  return device === 'cpu' ? { maxBatch: 32, maxWaitMs: 5 } : { maxBatch: 256, maxWaitMs: 10 };
}

export const defaultServiceOptions: ServiceOptions = {
  maxBytes: 10 * 1024 * 1024,
  maxPixels: 40_000_000,
  maxImages: 64,
  maxRequestBytes: 64 * 1024 * 1024,
  maxBatch: 32,
  maxWaitMs: 5,
  maxQueue: 512,
  maxRequestPixels: 256_000_000,
  // Past any camera's or screen's side (WebP's own limit); a panorama or a long screenshot fits.
  maxSide: 16_384,
  maxAspect: 32,
  // The cores, leaving one of libuv's four threads to read headers while every other one decodes.
  decodeConcurrency: Math.min(availableParallelism(), 3),
  maxInflightBytes: 128 * 1024 * 1024,
  // One image's patch grid of a ViT-L/16 at 224 px (196 × 1024) fits; a batch of them does not.
  maxJsonNumbers: 262_144,
  threads: 1,
  device: 'cpu',
  galleryGarbageBytes: GARBAGE_BYTES,
  // Queries run on the event loop a slice at a time: more at once only share it, and one may
  // embed its query while another searches.
  maxGalleryQueries: 2,
  maxGalleryQueue: 8,
  // Well above k (at most 100). A search's exact scoring costs this many images' MaxSim, whatever the gallery.
  maxSearchCandidates: 256,
};

/** One input's result, or its own error. */
export type Each<T> = { index: number; result: T } | { index: number; error: ApiError };
/** An embedded image, with the pixels the model saw (the package's input size, RGB). */
export type Outcome = Each<Embedded & { rgb: Uint8Array }>;

export class Service {
  ready = false;
  readonly metrics: Metrics = createMetrics();
  readonly batcher: Batcher;
  readonly probe?: ProbeHead;
  readonly limits: DecodeLimits;
  /**
   * Every decode passes it: at most maxPixels of decoding work (and decodeConcurrency images) at
   * once, whatever the number of requests, served a request at a time in turn; 4× that (or a
   * request's budget, if more) may wait.
   */
  readonly decodeGate: Gate;
  /** Searches and reconstructions running at once (maxGalleryQueries), and waiting (maxGalleryQueue). */
  readonly queryGate: Gate;
  private layouts: MapLayouts | null = null;
  gallery?: GalleryStore;
  /** The package's predictor (with its context encoder), for /v1/reconstruct. */
  predictor: Predictor | null = null;
  /** Set on shutdown: requests still arriving on open connections are refused. */
  draining = false;
  /** Request handlers running now (shutdown waits for them before closing the gallery). */
  private handlers = 0;
  private idle: (() => void)[] = [];

  private constructor(
    readonly embedder: Embedder,
    readonly options: ServiceOptions,
  ) {
    const m = embedder.manifest;
    this.limits = {
      maxBytes: options.maxBytes,
      maxPixels: options.maxPixels,
      maxSide: options.maxSide,
      maxAspect: options.maxAspect,
    };
    this.decodeGate = new Gate(
      options.maxPixels,
      // A request within its budget can wait whole on an idle server.
      Math.max(4 * options.maxPixels, options.maxRequestPixels),
      (n) => `decoding is busy: ${n} pixels' worth of decoding is waiting`,
      options.decodeConcurrency,
    );
    this.queryGate = new Gate(
      options.maxGalleryQueries,
      options.maxGalleryQueue,
      (n) => `server busy: ${n} searches and reconstructions are waiting`,
    );
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
      if (probe.kind === 'attentive') {
        const tokens = m.patches.rows * m.patches.cols;
        if (probe.tokens !== tokens || probe.dim !== m.embeddingDim)
          throw new Error(
            `probe.json: an attentive head over ${probe.tokens} × ${probe.dim} tokens, the encoder gives ${tokens} × ${m.embeddingDim}`,
          );
      } else {
        const want = readoutDim(probe.readout, m.embeddingDim);
        if (probe.dim !== want)
          throw new Error(
            `probe.json: a '${probe.readout}' head over ${m.embeddingDim}-d embeddings has ${want} inputs, not ${probe.dim}`,
          );
        checkReadout(probe.readout, m.patches.rows, m.patches.cols);
      }
      this.probe = probe;
    }
  }

  get manifest(): Manifest {
    return this.embedder.manifest;
  }

  static async open(modelDir: string, options: Partial<ServiceOptions> = {}): Promise<Service> {
    const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
    const o: ServiceOptions = {
      ...defaultServiceOptions,
      ...batchDefaults(options.device ?? defaultServiceOptions.device),
      ...given,
    };
    const s = new Service(await Embedder.open(modelDir, { threads: o.threads, device: o.device }), o);
    if (s.embedder.files)
      s.predictor = await Predictor.open(s.embedder.files, { threads: o.threads, device: o.device });
    if (o.gallery) await s.openGallery(o.gallery, o);
    // Ready means a real forward pass worked, not only that the files loaded.
    const size = s.manifest.preprocess.size;
    const probe = await s.batcher.submit(new Uint8Array(size * size * 3).fill(128));
    if (!probe.pooled.every(Number.isFinite))
      throw new Error('the encoder produced non-finite embeddings on a gray image');
    s.ready = true;
    return s;
  }

  /** Opens the gallery, checked against (or, with `reembed`, re-embedded by) this package's encoder. */
  private async openGallery(target: string, o: ServiceOptions): Promise<void> {
    const m = this.manifest;
    // The pictures are this package's input pixels when its input size is theirs: decoded, not resized.
    const embed = async (pictures: Buffer[]) => {
      const rgb = await Promise.all(pictures.map((data) => toRgb({ kind: 'encoded', data }, m.preprocess)));
      const e = await this.embedder.embed(rgb);
      return { tokens: e.tokens, pooled: e.pooled, rows: m.patches.rows, cols: m.patches.cols };
    };
    this.gallery = await openStore(
      target,
      { modelId: m.id, dim: m.embeddingDim, encoder: m.files.encoder.sha256 },
      {
        log: (line) => console.error(line),
        garbageBytes: o.galleryGarbageBytes,
        reembed: o.reembed ? { embed, batch: o.maxBatch } : undefined,
      },
    );
  }

  /**
   * Decodes and embeds every input; each gets its result or its own error. Headers are read first:
   * images over the request's decoding budget fail the request at once (413), before any decoding.
   * `signal` (the client went away) drops decodes and inference that have not started.
   */
  embedAll(items: ImageInput[], signal?: AbortSignal): Promise<Outcome[]> {
    return this.eachDecoded(items, signal, async (rgb) => ({ ...(await this.batcher.submit(rgb, signal)), rgb }));
  }

  /** Decodes every input as embedAll does, without the encoder: for routes that run another model. */
  decodeAll(items: ImageInput[], signal?: AbortSignal): Promise<Each<Uint8Array>[]> {
    return this.eachDecoded(items, signal, async (rgb) => rgb);
  }

  private async eachDecoded<T>(
    items: ImageInput[],
    signal: AbortSignal | undefined,
    then: (rgb: Uint8Array) => Promise<T>,
  ): Promise<Each<T>[]> {
    const inspected = await Promise.all(
      items.map(async (it): Promise<{ index: number; img: Inspected } | { index: number; error: ApiError }> => {
        if (it.error) return { index: it.index, error: it.error };
        try {
          return { index: it.index, img: await inspectImage(it.bytes!, this.limits) };
        } catch (e) {
          return { index: it.index, error: this.apiError(e) };
        }
      }),
    );
    const cost = inspected.reduce((n, x) => n + ('img' in x ? x.img.cost : 0), 0);
    if (cost > this.options.maxRequestPixels) {
      throw new ApiError(
        'payload_too_large',
        `the images of this request add up to ${cost} pixels' worth of decoding (their pixels weighted by format, plus each one's rows and setup); the limit is ${this.options.maxRequestPixels}`,
      );
    }
    // This request's decodes take their turns at the gate together.
    const request = {};
    return Promise.all(
      inspected.map(async (x): Promise<Each<T>> => {
        if ('error' in x) return x;
        try {
          const t0 = performance.now();
          const rgb = await decodeInspected(x.img, this.manifest.preprocess, this.decodeGate, signal, request);
          this.metrics.stage.observe({ stage: 'decode' }, (performance.now() - t0) / 1000);
          return { index: x.index, result: await then(rgb) };
        } catch (e) {
          const error = this.apiError(e);
          if (error.code === 'client_closed') this.metrics.cancelled.inc();
          return { index: x.index, error };
        }
      }),
    );
  }

  private apiError(e: unknown): ApiError {
    if (e instanceof ApiError) return e;
    return fromLayer(e) ?? new ApiError('internal', (e as Error).message);
  }

  /** Runs a request's handler, counted so that shutdown can wait for the running ones. */
  async handle<T>(f: () => Promise<T>): Promise<T> {
    this.handlers++;
    try {
      return await f();
    } finally {
      if (--this.handlers === 0) for (const go of this.idle.splice(0)) go();
    }
  }

  /** Resolves when no handler runs, or after `ms`, whichever comes first. */
  async settled(ms: number): Promise<void> {
    if (this.handlers === 0) return;
    await new Promise<void>((go) => {
      const t = setTimeout(go, ms);
      this.idle.push(() => {
        clearTimeout(t);
        go();
      });
    });
  }

  /** Runs a gallery query once it is admitted (429 when too many wait); `signal` takes it out of the queue. */
  query<T>(task: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    return this.queryGate.run(1, task, signal);
  }

  /** The map of `gallery`: one layout at a time, whatever the requests. */
  map(gallery: GalleryStore): MapLayouts {
    if (this.layouts?.gallery !== gallery) this.layouts = new MapLayouts(gallery, (line) => console.error(line));
    return this.layouts;
  }

  async close(): Promise<void> {
    this.ready = false;
    await this.layouts?.close();
    await this.batcher.drain();
    await this.gallery?.close();
    await Promise.all([this.embedder.close(), this.predictor?.close()]);
  }
}
