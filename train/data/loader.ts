/**
 * Seeded, resumable batches of normalised patches. The order of epoch e is a permutation drawn
 * from (seed, e); augmentation of an item from (seed, e, item). A position {epoch, cursor} is all
 * a checkpoint needs to continue the exact same stream. Corrupt images are skipped with a warning
 * and counted; the batch is filled from the following items.
 */
import type { Dataset } from './dataset.ts';
import {
  decodeRgb,
  normalizePatches,
  resizeRgb,
  type Crop,
  type Preprocess,
  type RgbImage,
} from '../../format/preprocess.ts';
import { Rng } from '../../model/rng.ts';
import { jitterRgb, type TargetView } from '../views.ts';

export interface Augment {
  /** Random-resized-crop area fraction range, or null for none. */
  cropScale: [number, number] | null;
  cropRatio: [number, number];
  hflip: boolean;
  /** Also yield a target view: the image mirrored with probability ½ (views.ts). */
  targetFlip?: boolean;
  /** Also yield this many views per image (objective `views`): crop, flip and jitter each. */
  views?: number;
  /** Colour-jitter strength of those views (views.ts jitterRgb). */
  jitter?: number;
}

export interface LoaderOptions {
  batch: number;
  seed: number;
  preprocess: Preprocess;
  patch: number;
  augment: Augment;
  onSkip?: (what: string, err: Error) => void;
  /** Decoded images kept in memory, up to this many bytes (default 1 GiB; 0: none). */
  cacheBytes?: number;
}

/** Enough for CIFAR-10 or Fashion-MNIST whole (150 MB decoded), and the first 7k images of a 224 px set. */
const CACHE_BYTES = 1 << 30;

export interface Position {
  epoch: number;
  cursor: number;
}

export interface Batch {
  /** [batch, N, p·p·3] */
  patches: Float32Array;
  batch: number;
  /** With augment.targetFlip: what the target encoder sees. */
  targetView?: TargetView;
  /** With augment.views: [batch, views, N, p·p·3], the views of each image together. */
  views?: Float32Array;
  /** Stream position after this batch. */
  end: Position;
  skipped: number;
}

/** torchvision RandomResizedCrop's box sampling, seeded. */
export function sampleCrop(
  rng: Rng,
  width: number,
  height: number,
  scale: [number, number],
  ratio: [number, number],
): Crop {
  const area = width * height;
  const logR = [Math.log(ratio[0]), Math.log(ratio[1])];
  for (let i = 0; i < 10; i++) {
    const target = area * rng.uniform(scale[0], scale[1]);
    const ar = Math.exp(rng.uniform(logR[0], logR[1]));
    const w = Math.round(Math.sqrt(target * ar));
    const h = Math.round(Math.sqrt(target / ar));
    if (w > 0 && h > 0 && w <= width && h <= height) {
      return { left: rng.int(width - w + 1), top: rng.int(height - h + 1), width: w, height: h };
    }
  }
  const s = Math.min(width, height);
  return { left: Math.floor((width - s) / 2), top: Math.floor((height - s) / 2), width: s, height: s };
}

function flipHwc(rgb: Uint8Array, size: number): Uint8Array {
  const out = new Uint8Array(rgb.length);
  for (let y = 0; y < size; y++)
    for (let x = 0; x < size; x++) {
      const s = 3 * (y * size + x);
      const d = 3 * (y * size + size - 1 - x);
      out[d] = rgb[s];
      out[d + 1] = rgb[s + 1];
      out[d + 2] = rgb[s + 2];
    }
  return out;
}

export class BatchLoader {
  private order: Int32Array | null = null;
  private orderEpoch = -1;
  private pending: Promise<Batch> | null = null;
  private pos: Position;
  skippedTotal = 0;
  /**
   * Decoding is most of a small image's cost (a 32×32 JPEG through sharp: ~1.4 ms of CPU, the
   * step's share of it ~10%), and the same images come back every epoch. What is kept is what
   * no random draw has touched yet: the decoded image, or, with no crop to draw, the resized one.
   */
  private readonly cache = new Map<number, RgbImage>();
  private cacheLeft: number;
  /** Items decoded from the dataset so far (cache misses). */
  decodes = 0;

  constructor(
    private readonly ds: Dataset,
    private readonly o: LoaderOptions,
    start: Position = { epoch: 0, cursor: 0 },
  ) {
    if (ds.size < o.batch) throw new RangeError(`dataset has ${ds.size} images, fewer than one batch of ${o.batch}`);
    this.pos = { ...start };
    this.cacheLeft = o.cacheBytes ?? CACHE_BYTES;
  }

  private async source(index: number): Promise<RgbImage> {
    const hit = this.cache.get(index);
    if (hit) return hit;
    const { preprocess: p, augment: a } = this.o;
    this.decodes++;
    let img = await decodeRgb(await this.ds.read(index));
    if (!a.cropScale && !a.views) img = { data: await resizeRgb(img, p), width: p.size, height: p.size };
    // The next batch is loaded while this one trains, so at an epoch's turn one image can be
    // decoded twice at once: it is kept (and counted) once.
    if (img.data.length <= this.cacheLeft && !this.cache.has(index)) {
      this.cache.set(index, img);
      this.cacheLeft -= img.data.length;
    }
    return img;
  }

  get batchesPerEpoch(): number {
    return Math.floor(this.ds.size / this.o.batch);
  }

  private permutation(epoch: number): Int32Array {
    if (this.orderEpoch !== epoch) {
      this.order = Rng.for(this.o.seed, 'order', epoch).permutation(this.ds.size);
      this.orderEpoch = epoch;
    }
    return this.order!;
  }

  private async item(
    epoch: number,
    index: number,
  ): Promise<{ rgb: Uint8Array; flipped: boolean; views: Uint8Array[] }> {
    const { preprocess: p, augment: a } = this.o;
    const img = await this.source(index);
    const rng = Rng.for(this.o.seed, 'augment', epoch, index);
    if (a.views) {
      // The views carry the augmentation; the batch's own patches (diagnostics) are the whole image.
      const views: Uint8Array[] = [];
      for (let v = 0; v < a.views; v++) views.push(jitterRgb(await this.cropFlip(img, rng), rng, a.jitter ?? 0));
      return { rgb: await resizeRgb(img, p), flipped: false, views };
    }
    const rgb = await this.cropFlip(img, rng);
    // Drawn last, so that turning it on leaves every other view of the stream as it was.
    return { rgb, flipped: !!a.targetFlip && rng.next() < 0.5, views: [] };
  }

  /** One random-resized crop (if enabled), resized, mirrored with probability ½ (if enabled). */
  private async cropFlip(img: RgbImage, rng: Rng): Promise<Uint8Array> {
    const { preprocess: p, augment: a } = this.o;
    const crop = a.cropScale ? sampleCrop(rng, img.width, img.height, a.cropScale, a.cropRatio) : undefined;
    const rgb = await resizeRgb(img, p, crop);
    return a.hflip && rng.next() < 0.5 ? flipHwc(rgb, p.size) : rgb;
  }

  private async load(start: Position): Promise<Batch> {
    const { batch, preprocess, patch } = this.o;
    let { epoch, cursor } = start;
    const per = (preprocess.size / patch) ** 2 * patch * patch * 3;
    const patches = new Float32Array(batch * per);
    const view = this.o.augment.targetFlip
      ? { patches: new Float32Array(batch * per), flipped: new Uint8Array(batch) }
      : undefined;
    const nViews = this.o.augment.views ?? 0;
    const views = nViews ? new Float32Array(batch * nViews * per) : undefined;
    let filled = 0;
    let skipped = 0;
    while (filled < batch) {
      const order = this.permutation(epoch);
      if (order.length - cursor < batch - filled) {
        // Too few items left in this epoch: drop the partial batch, start the next epoch.
        epoch++;
        cursor = 0;
        filled = 0;
        continue;
      }
      const want = batch - filled;
      const idx = Array.from(order.subarray(cursor, cursor + want));
      cursor += want;
      const results = await Promise.allSettled(idx.map((i) => this.item(epoch, i)));
      results.forEach((r, k) => {
        if (r.status === 'fulfilled') {
          const { rgb, flipped } = r.value;
          normalizePatches(rgb, preprocess, patch, patches, filled * per);
          r.value.views.forEach((v, k) => normalizePatches(v, preprocess, patch, views!, (filled * nViews + k) * per));
          if (view) {
            view.flipped[filled] = flipped ? 1 : 0;
            normalizePatches(
              flipped ? flipHwc(rgb, preprocess.size) : rgb,
              preprocess,
              patch,
              view.patches,
              filled * per,
            );
          }
          filled++;
        } else {
          skipped++;
          this.o.onSkip?.(this.ds.describe(idx[k]), r.reason as Error);
        }
      });
    }
    this.skippedTotal += skipped;
    return {
      patches,
      batch,
      ...(view ? { targetView: view } : {}),
      ...(views ? { views } : {}),
      end: { epoch, cursor },
      skipped,
    };
  }

  /** The next batch; the one after it is already decoding while the caller trains. */
  async next(): Promise<Batch> {
    const current = this.pending ?? this.load(this.pos);
    const b = await current;
    this.pos = b.end;
    this.pending = this.load(this.pos);
    this.pending.catch(() => {}); // surfaced by the next call
    return b;
  }
}
