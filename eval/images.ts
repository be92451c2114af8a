/**
 * The labeled images of a split at the model's input size. An evaluation reads them once per
 * encoder and once more for the pixel baseline; decoding dominated those passes at 32×32, so a
 * split that fits in memory is decoded once and kept.
 */
import cliProgress from 'cli-progress';
import type { Dataset } from '../train/data/dataset.ts';
import { toRgb, type Preprocess } from '../format/preprocess.ts';

/** Splits above this many decoded bytes are decoded again on every pass instead of kept. */
const KEEP_BYTES = 1 << 30;
const DECODE_BATCH = 64;

export interface ImageBatch {
  rgb: Uint8Array[];
  labels: number[];
}

export class LabeledImages {
  private kept: (ImageBatch & { skipped: number }) | null = null;
  private readonly warned = new Set<number>();

  private constructor(
    private readonly ds: Dataset,
    private readonly items: number[],
    private readonly preprocess: Preprocess,
    private readonly log: (s: string) => void,
  ) {}

  /**
   * Opens the items, and decodes and keeps them when `keep` (the default) and they fit in memory;
   * `what` names them on the progress bar.
   */
  static async open(
    ds: Dataset,
    items: number[],
    preprocess: Preprocess,
    o: { log: (s: string) => void; progress?: boolean; what?: string; keep?: boolean },
  ): Promise<LabeledImages> {
    const images = new LabeledImages(ds, items, preprocess, o.log);
    if (o.keep !== false && items.length * 3 * preprocess.size ** 2 <= KEEP_BYTES) {
      const all = { rgb: [] as Uint8Array[], labels: [] as number[], skipped: 0 };
      const bar = progressBar(`decoding ${o.what ?? 'images'}`, items.length, o.progress);
      for await (const b of images.decode(DECODE_BATCH)) {
        all.rgb.push(...b.rgb);
        all.labels.push(...b.labels);
        all.skipped += b.skipped;
        bar?.advance(b.rgb.length + b.skipped);
      }
      bar?.stop();
      images.kept = all;
    }
    return images;
  }

  /** Items asked for, readable or not. */
  get size(): number {
    return this.items.length;
  }

  async *batches(size: number): AsyncGenerator<ImageBatch & { skipped: number }> {
    if (!this.kept) {
      yield* this.decode(size);
      return;
    }
    const { rgb, labels, skipped } = this.kept;
    // The unreadable ones are counted with the first batch, as a pass that decodes would count them.
    for (let i = 0; i < Math.max(rgb.length, 1); i += size)
      yield { rgb: rgb.slice(i, i + size), labels: labels.slice(i, i + size), skipped: i === 0 ? skipped : 0 };
  }

  /** Readable images, in item order; unreadable ones are skipped with one warning each. */
  private async *decode(size: number): AsyncGenerator<ImageBatch & { skipped: number }> {
    for (let start = 0; start < this.items.length; start += size) {
      const idx = this.items.slice(start, start + size);
      const decoded = await Promise.allSettled(idx.map(async (i) => toRgb(await this.ds.read(i), this.preprocess)));
      const b = { rgb: [] as Uint8Array[], labels: [] as number[], skipped: 0 };
      decoded.forEach((r, k) => {
        if (r.status === 'fulfilled') {
          b.rgb.push(r.value);
          b.labels.push(this.ds.label(idx[k]) ?? -1);
          return;
        }
        b.skipped++;
        if (this.warned.has(idx[k])) return;
        this.warned.add(idx[k]);
        this.log(
          `warning: skipped unreadable image ${this.ds.describe(idx[k])}: ${(r.reason as Error).message.split('\n')[0]}`,
        );
      });
      yield b;
    }
  }
}

/** A progress bar with images/s and ETA on a TTY; null elsewhere. */
export function progressBar(what: string, total: number, show = false) {
  if (!show) return null;
  const bar = new cliProgress.SingleBar(
    {
      format: `${what} |{bar}| {value}/{total} images | {ips} img/s | ETA {eta_formatted}`,
      hideCursor: true,
      clearOnComplete: true,
    },
    cliProgress.Presets.shades_classic,
  );
  const t0 = performance.now();
  let done = 0;
  bar.start(total, 0, { ips: '-' });
  return {
    advance(n: number) {
      done += n;
      bar.update(done, { ips: (done / ((performance.now() - t0) / 1000)).toFixed(0) });
    },
    stop: () => bar.stop(),
  };
}
