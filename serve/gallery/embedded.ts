/** The embedded gallery (gallery.ts: a directory, one writing process) as a GalleryStore. */
import type { Change, Gallery, ImageInfo, PatchHit, SearchHit } from './gallery.ts';
import type { GalleryStore, Sample, SearchOptions } from './store.ts';

export class EmbeddedStore implements GalleryStore {
  constructor(readonly gallery: Gallery) {}

  get where(): string {
    return this.gallery.dir;
  }

  get dim(): number {
    return this.gallery.dim;
  }

  async size(): Promise<number> {
    return this.gallery.size;
  }

  async version(): Promise<number> {
    return this.gallery.version;
  }

  async commit(changes: Change[]): Promise<number> {
    this.gallery.commit(changes);
    return this.gallery.size;
  }

  async remove(id: string): Promise<boolean> {
    return this.gallery.remove(id);
  }

  async get(id: string): Promise<ImageInfo | undefined> {
    return this.gallery.get(id);
  }

  async stored(ids: string[]): Promise<Set<string>> {
    return new Set(ids.filter((id) => this.gallery.has(id)));
  }

  async list(offset: number, limit: number): Promise<{ total: number; items: ImageInfo[] }> {
    return this.gallery.list(offset, limit);
  }

  async image(id: string): Promise<Buffer | undefined> {
    return this.gallery.image(id);
  }

  async sample(limit: number): Promise<Sample> {
    return { version: this.gallery.version, total: this.gallery.size, ...this.gallery.pooledSample(limit) };
  }

  nearestPatches(queries: Float32Array, count: number, k: number, o?: { signal?: AbortSignal }): Promise<PatchHit[][]> {
    return this.gallery.nearestPatches(queries, count, k, o);
  }

  search(
    query: Float32Array,
    positions: [number, number][],
    pooled: Float32Array,
    k: number,
    withPooled: boolean,
    o?: SearchOptions,
  ): Promise<SearchHit[]> {
    return this.gallery.search(query, positions, pooled, k, withPooled, o);
  }

  async health(): Promise<'ok' | 'unavailable'> {
    return 'ok';
  }

  async close(): Promise<void> {
    this.gallery.close();
  }
}
