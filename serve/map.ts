/**
 * The gallery's map: its pooled embeddings laid out in 2-D by UMAP, with each image's label from
 * its metadata. A layout takes seconds of CPU, so it runs in a worker thread (map-worker.ts), one
 * at a time; while the next is made, the last one is served, saying which gallery version it is of.
 */
import { Worker } from 'node:worker_threads';
import type { GalleryStore } from './gallery/store.ts';

/** Points of the map, one per image; at most this many images are laid out. */
const MAP_POINTS = 2000;
const LABEL_KEYS = ['label', 'class', 'category'];

export interface GalleryMap {
  /** The gallery version (GalleryStore.version) this layout is of. */
  version: number;
  /** Images in the gallery at that version. */
  total: number;
  points: { id: string; x: number; y: number; label: string | null }[];
}

export class MapLayouts {
  private last: GalleryMap | null = null;
  private next: Promise<GalleryMap> | null = null;
  private worker: Worker | null = null;
  private closed = false;

  constructor(
    readonly gallery: GalleryStore,
    private readonly log: (line: string) => void,
  ) {}

  /**
   * The layout of the gallery as it is now, or while that one is being made, the last one made
   * (only the first request of all waits for a layout). A failed layout is thrown to the requests
   * waiting for it and logged; the next request tries again.
   */
  async current(): Promise<GalleryMap> {
    if (this.last && this.last.version === (await this.gallery.version())) return this.last;
    if (!this.next) {
      const made = this.layout().finally(() => {
        if (this.next === made) this.next = null;
      });
      this.next = made;
      made.then(
        (map) => {
          if (!this.last || map.version > this.last.version) this.last = map;
        },
        (e: Error) => this.closed || this.log(`map: layout failed: ${e.message}`),
      );
    }
    return this.last ?? this.next;
  }

  private async layout(): Promise<GalleryMap> {
    const dim = this.gallery.dim;
    const { version, total, ids, pooled, metadata } = await this.gallery.sample(MAP_POINTS);
    const xy = ids.length < 4 ? ids.map((_, i) => [i, 0]) : await this.inWorker(pooled, dim);
    const label = (m?: Record<string, unknown>) => {
      const v = LABEL_KEYS.map((k) => m?.[k]).find((x) => typeof x === 'string' || typeof x === 'number');
      return v === undefined ? null : String(v);
    };
    return {
      version,
      total,
      points: ids.map((id, i) => ({ id, x: xy[i][0], y: xy[i][1], label: label(metadata[i]) })),
    };
  }

  private inWorker(pooled: Float32Array, dim: number): Promise<number[][]> {
    // A worker does not inherit the module hooks bin/ijepa.js registers, so it registers tsx first.
    const code = `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((t) => { t.register(); return import(${JSON.stringify(new URL('./map-worker.ts', import.meta.url).href)}); });`;
    const worker = new Worker(code, { eval: true, workerData: { pooled, dim } });
    this.worker = worker;
    return new Promise<number[][]>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
      worker.once('exit', (code) => reject(new Error(`the layout worker exited (${code}) before it answered`)));
    }).finally(() => {
      this.worker = null;
      void worker.terminate();
    });
  }

  /** Stops a layout being made (shutdown). */
  async close(): Promise<void> {
    this.closed = true;
    await this.worker?.terminate();
  }
}
