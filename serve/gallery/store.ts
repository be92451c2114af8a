/**
 * What the routes need from a gallery, wherever it lives: the embedded store (gallery.ts behind
 * embedded.ts: a directory, one process) or PostgreSQL + pgvector (postgres.ts: any number of
 * server processes on one database). Both promise the same: a commit that resolves is durable, a
 * commit that throws changed nothing, and searches score by MaxSim over the query patches.
 */
import type { Change, ImageInfo, PatchHit, SearchHit } from './gallery.ts';

/** Pooled embeddings of some images, for a map, and the gallery version they are of. */
export interface Sample {
  version: number;
  /** Images in the gallery at that version. */
  total: number;
  ids: string[];
  /** [ids.length, D] */
  pooled: Float32Array;
  metadata: (Record<string, unknown> | undefined)[];
}

export interface SearchOptions {
  signal?: AbortSignal;
  /** At most this many images are scored exactly (MaxSim over all their patches). */
  candidates?: number;
}

export interface GalleryStore {
  /** Where it lives, for messages: a directory, or a database URL without its password. */
  readonly where: string;
  readonly dim: number;
  /** Images stored now. */
  size(): Promise<number>;
  /** Counts commits: what was computed from the gallery is stale once it changed. */
  version(): Promise<number>;
  /**
   * Applies one request's changes as one unit, in order (adding an id that exists replaces it;
   * removing one that does not is a no-op), and resolves with the gallery's size after them once
   * they are durable. Throws GalleryError with nothing changed.
   */
  commit(changes: Change[]): Promise<number>;
  /** Removes an image; false when there was none. */
  remove(id: string): Promise<boolean>;
  get(id: string): Promise<ImageInfo | undefined>;
  /** Which of `ids` are stored. */
  stored(ids: string[]): Promise<Set<string>>;
  /** Images in the order they were added (a replaced one counts as added again), a page at a time. */
  list(offset: number, limit: number): Promise<{ total: number; items: ImageInfo[] }>;
  /** The stored PNG of an image, if its add carried one. */
  image(id: string): Promise<Buffer | undefined>;
  /** Pooled embeddings of up to `limit` images, evenly spaced in adding order. */
  sample(limit: number): Promise<Sample>;
  /**
   * The gallery patches nearest to each of `count` query embeddings [count, D], by cosine of the
   * centred vectors (as the predictor's targets are compared): index candidates, then exact rerank.
   */
  nearestPatches(queries: Float32Array, count: number, k: number, o?: { signal?: AbortSignal }): Promise<PatchHit[][]>;
  /**
   * Nearest images for query patches [nq, D] at grid `positions`: index candidates per query
   * patch, then at most `candidates` images scored exactly by MaxSim (the mean over query patches
   * of the best cosine with the image's patches).
   */
  search(
    query: Float32Array,
    positions: [number, number][],
    pooled: Float32Array,
    k: number,
    withPooled: boolean,
    o?: SearchOptions,
  ): Promise<SearchHit[]>;
  /** 'unavailable' while the store cannot be reached (its database is down); requests then fail with 503. */
  health(): Promise<'ok' | 'unavailable'>;
  close(): Promise<void>;
}
