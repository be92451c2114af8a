/**
 * Seeded, resumable batches of normalised patches. The order of epoch e is a permutation drawn
 * from (seed, e); augmentation of an item from (seed, e, item). A position {epoch, cursor} is all
 * a checkpoint needs to continue the exact same stream. Corrupt images are skipped with a warning
 * and counted; the batch is filled from the following items.
 *
 * The items are made off the step's thread (pool.ts: decode, crops, flips, colour ops,
 * normalisation); this thread reads the dataset and assembles the batch.
 */
import type { Dataset } from './dataset.ts';
import type { Preprocess } from '../../format/preprocess.ts';
import { Rng } from '../../model/rng.ts';
import type { TargetView } from '../views.ts';
import { itemLayout, type Augment, type ItemResult } from './item.ts';
import { defaultWorkers, ItemPool, PoolFailure } from './pool.ts';

export { sampleCrop, type Augment } from './item.ts';

export interface LoaderOptions {
  batch: number;
  seed: number;
  preprocess: Preprocess;
  patch: number;
  augment: Augment;
  onSkip?: (what: string, err: Error) => void;
  /** Decoded images kept in memory, up to this many bytes (default 1 GiB; 0: none), shared out among the workers. */
  cacheBytes?: number;
  /** Worker threads making items (default: one per core but one, at least one; 0: this thread). */
  workers?: number;
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
  /** With augment.views and localViews: [batch, localViews, Nl, p·p·3], Nl = (localSize / p)². */
  locals?: Float32Array;
  /** Stream position after this batch. */
  end: Position;
  skipped: number;
}

export class BatchLoader {
  private order: Int32Array | null = null;
  private orderEpoch = -1;
  private pending: Promise<Batch> | null = null;
  private pos: Position;
  private readonly pool: ItemPool;
  skippedTotal = 0;
  /** Items decoded from the dataset so far (cache misses). */
  decodes = 0;

  constructor(
    private readonly ds: Dataset,
    private readonly o: LoaderOptions,
    start: Position = { epoch: 0, cursor: 0 },
  ) {
    if (ds.size < o.batch) throw new RangeError(`dataset has ${ds.size} images, fewer than one batch of ${o.batch}`);
    this.pos = { ...start };
    const workers = o.workers ?? defaultWorkers();
    if (!Number.isInteger(workers) || workers < 0)
      throw new RangeError(`workers must be a whole number ≥ 0, not ${workers}`);
    this.pool = new ItemPool(
      {
        seed: o.seed,
        preprocess: o.preprocess,
        patch: o.patch,
        augment: o.augment,
        cacheBytes: o.cacheBytes ?? CACHE_BYTES,
      },
      workers,
    );
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

  private async load(start: Position): Promise<Batch> {
    const { batch } = this.o;
    const L = itemLayout(this.o);
    let { epoch, cursor } = start;
    const { per, perLocal } = L;
    const patches = new Float32Array(batch * per);
    const view = L.targetFlip ? { patches: new Float32Array(batch * per), flipped: new Uint8Array(batch) } : undefined;
    const views = L.views ? new Float32Array(batch * L.views * per) : undefined;
    const locals = L.localViews ? new Float32Array(batch * L.localViews * perLocal) : undefined;
    const put = (r: ItemResult, at: number) => {
      const d = r.data;
      patches.set(d.subarray(0, per), at * per);
      if (view) {
        view.flipped[at] = r.flipped ? 1 : 0;
        view.patches.set(d.subarray(L.target, L.target + per), at * per);
      }
      views?.set(d.subarray(L.view0, L.view0 + L.views * per), at * L.views * per);
      locals?.set(d.subarray(L.local0, L.total), at * L.localViews * perLocal);
    };
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
      const e = epoch;
      const results = await Promise.allSettled(idx.map((i) => this.pool.make(e, i, () => this.ds.read(i))));
      for (const [k, r] of results.entries()) {
        if (r.status === 'fulfilled') {
          if (r.value.decoded) this.decodes++;
          put(r.value, filled++);
        } else {
          if (r.reason instanceof PoolFailure) throw r.reason;
          skipped++;
          this.o.onSkip?.(this.ds.describe(idx[k]), r.reason as Error);
        }
      }
    }
    this.skippedTotal += skipped;
    return {
      patches,
      batch,
      ...(view ? { targetView: view } : {}),
      ...(views ? { views } : {}),
      ...(locals ? { locals } : {}),
      end: { epoch, cursor },
      skipped,
    };
  }

  /** The next batch; the one after it is already being made while the caller trains. */
  async next(): Promise<Batch> {
    const current = this.pending ?? this.load(this.pos);
    const b = await current;
    this.pos = b.end;
    this.pending = this.load(this.pos);
    this.pending.catch(() => {}); // surfaced by the next call
    return b;
  }

  /** Frees this loader's part of the loader threads (its caches); idle threads do not keep the process alive. */
  close(): void {
    this.pool.close();
  }
}
