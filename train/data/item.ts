/**
 * One training item, from its encoded image to normalised patches: decode (kept in a cache), the
 * seeded crops, flips and colour ops of its views, normalisation. A function of (seed, epoch,
 * index, image) alone, so any thread computes the same floats; the loader's workers run it.
 */
import {
  decodeRgb,
  normalizePatches,
  resizeRgb,
  type Crop,
  type ImageSource,
  type Preprocess,
  type RgbImage,
} from '../../format/preprocess.ts';
import { Rng } from '../../model/rng.ts';
import { colourView, hflip, type ColourOps } from './augment.ts';
import { coverCrop, resizeCrop } from './resize.ts';

export interface Augment extends ColourOps {
  /** Random-resized-crop area fraction range, or null for none. */
  cropScale: [number, number] | null;
  cropRatio: [number, number];
  hflip: boolean;
  /** Also yield a target view: the image mirrored with probability ½ (views.ts). */
  targetFlip?: boolean;
  /**
   * Also yield this many global views per image (objective `views`): crop, flip and colour ops
   * each, at the model's size. 0 or absent: the I-JEPA item, one cropped image.
   */
  views?: number;
  /** With views: this many local views, crops of `localScale` of the area at `localSize` px. */
  localViews?: number;
  localSize?: number;
  localScale?: [number, number];
}

export interface ItemOptions {
  seed: number;
  preprocess: Preprocess;
  patch: number;
  augment: Augment;
  /** Decoded images kept, up to this many bytes. */
  cacheBytes: number;
}

/** Where an item's parts sit in its one Float32Array, in floats. */
export interface ItemLayout {
  /** Floats of one image at the model's size (its patches, [N, p·p·3]). */
  per: number;
  /** Floats of one local view ([Nl, p·p·3]). */
  perLocal: number;
  targetFlip: boolean;
  views: number;
  localViews: number;
  /** Offsets of the target view, the first global view and the first local view. */
  target: number;
  view0: number;
  local0: number;
  total: number;
}

export function itemLayout(o: Pick<ItemOptions, 'preprocess' | 'augment'>): ItemLayout {
  const a = o.augment;
  const per = o.preprocess.size * o.preprocess.size * 3;
  const views = a.views ?? 0;
  // Local views complement global ones; the I-JEPA item has none.
  const localViews = views ? (a.localViews ?? 0) : 0;
  const localSize = a.localSize ?? 16;
  const perLocal = localSize * localSize * 3;
  const targetFlip = !!a.targetFlip;
  const target = per;
  const view0 = target + (targetFlip ? per : 0);
  const local0 = view0 + views * per;
  return {
    per,
    perLocal,
    targetFlip,
    views,
    localViews,
    target,
    view0,
    local0,
    total: local0 + localViews * perLocal,
  };
}

export interface ItemResult {
  /** The item's floats laid out as itemLayout says. */
  data: Float32Array;
  /** The target view is the mirrored image. */
  flipped: boolean;
  /** The image was decoded for this item (a cache miss). */
  decoded: boolean;
  /** The decoded image is in this maker's cache now: later items of this index need no bytes. */
  cached: boolean;
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

export class ItemMaker {
  readonly layout: ItemLayout;
  private readonly local: Preprocess;
  /**
   * Decoding is most of a small image's cost (a 32×32 JPEG through sharp: ~1.4 ms of CPU), and
   * the same images come back every epoch. What is kept is what no random draw has touched yet:
   * the decoded image, or, with no crop to draw, the resized one.
   */
  private readonly cache = new Map<number, RgbImage>();
  /** Decodes under way: an image asked for twice at once (an epoch's turn) is decoded once. */
  private readonly decoding = new Map<number, Promise<RgbImage>>();
  private cacheLeft: number;

  constructor(private readonly o: ItemOptions) {
    this.layout = itemLayout(o);
    this.cacheLeft = o.cacheBytes;
    this.local = { ...o.preprocess, size: o.augment.localSize ?? 16 };
  }

  has(index: number): boolean {
    return this.cache.has(index);
  }

  private async source(index: number, src: ImageSource | undefined): Promise<{ img: RgbImage; decoded: boolean }> {
    const hit = this.cache.get(index) ?? (await this.decoding.get(index));
    if (hit) return { img: hit, decoded: false };
    if (!src) throw new Error(`item ${index}: no image bytes and none cached`);
    const { preprocess: p, augment: a } = this.o;
    const decode = (async () => {
      let img = await decodeRgb(src);
      if (!a.cropScale && !a.views) img = { data: await resizeRgb(img, p), width: p.size, height: p.size };
      return img;
    })();
    this.decoding.set(index, decode);
    try {
      const img = await decode;
      if (img.data.length <= this.cacheLeft) {
        this.cache.set(index, img);
        this.cacheLeft -= img.data.length;
      }
      return { img, decoded: true };
    } finally {
      this.decoding.delete(index);
    }
  }

  /** The item `index` of epoch `epoch`; `src` may be left out when has(index). */
  async make(epoch: number, index: number, src?: ImageSource): Promise<ItemResult> {
    const { preprocess: p, patch, augment: a } = this.o;
    const L = this.layout;
    const { img, decoded } = await this.source(index, src);
    const rng = Rng.for(this.o.seed, 'augment', epoch, index);
    const data = new Float32Array(L.total);
    let flipped = false;
    if (L.views) {
      // The views carry the augmentation; the item's own patches (diagnostics) are the whole image.
      for (let v = 0; v < L.views; v++) {
        const rgb = colourView(this.view(img, rng, p.size, a.cropScale), rng, a);
        normalizePatches(rgb, p, patch, data, L.view0 + v * L.per);
      }
      for (let v = 0; v < L.localViews; v++) {
        const rgb = colourView(this.view(img, rng, this.local.size, a.localScale ?? [0.05, 0.3]), rng, a);
        normalizePatches(rgb, this.local, patch, data, L.local0 + v * L.perLocal);
      }
      normalizePatches(await resizeRgb(img, p), p, patch, data, 0);
      if (L.targetFlip) data.copyWithin(L.target, 0, L.per);
    } else {
      const rgb = await this.cropFlip(img, rng);
      normalizePatches(rgb, p, patch, data, 0);
      if (L.targetFlip) {
        // Drawn last, so that turning it on leaves every other view of the stream as it was.
        flipped = rng.next() < 0.5;
        normalizePatches(flipped ? hflip(rgb, p.size) : rgb, p, patch, data, L.target);
      }
    }
    return { data, flipped, decoded, cached: this.cache.has(index) };
  }

  /** The I-JEPA image: a random-resized crop (if enabled) through sharp, mirrored with probability ½ (if enabled). */
  private async cropFlip(img: RgbImage, rng: Rng): Promise<Uint8Array> {
    const { preprocess: p, augment: a } = this.o;
    const crop = a.cropScale ? sampleCrop(rng, img.width, img.height, a.cropScale, a.cropRatio) : undefined;
    const rgb = await resizeRgb(img, p, crop);
    return a.hflip && rng.next() < 0.5 ? hflip(rgb, p.size) : rgb;
  }

  /**
   * A view: the same draws as cropFlip's, resized in JavaScript (resize.ts), which makes a
   * multi-crop item, eight or more views, affordable.
   */
  private view(img: RgbImage, rng: Rng, size: number, scale: [number, number] | null): Uint8Array {
    const a = this.o.augment;
    const drawn = scale
      ? sampleCrop(rng, img.width, img.height, scale, a.cropRatio)
      : { left: 0, top: 0, width: img.width, height: img.height };
    const rgb = resizeCrop(img, this.o.preprocess.resize === 'center-crop' ? coverCrop(drawn) : drawn, size);
    return a.hflip && rng.next() < 0.5 ? hflip(rgb, size) : rgb;
  }
}
