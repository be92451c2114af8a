/**
 * The patch gallery: every patch embedding of every added image, for nearest-patch retrieval.
 * The journal (journal.ts) is the source of truth; the patch index (patch-index.ts) finds
 * candidate images, which are then scored exactly by MaxSim over their stored patches.
 *
 * What it promises: every write acknowledged (returned from `commit`) is present after any crash,
 * restart or full disk; a failed write changes nothing; a gallery is never left unopenable by the
 * gallery itself (a bad index snapshot is rebuilt from the journal; only a journal corrupted in
 * its middle is refused). One process writes a gallery at a time (lock.ts).
 *
 * The index is loaded from a snapshot written on close — index-<sha256>.hnsw, made current by
 * index.json (renamed into place last) — and the journal records after it are replayed; without a
 * usable snapshot it is rebuilt from the journal. When removed patches outnumber live ones more
 * than twice, the journal and the index are compacted on open (journal.ts `rewrite`).
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { moveInto, syncDir, syncFile, writeAtomic } from '../../format/atomic.ts';
import { sha256 } from '../../format/package.ts';
import { GalleryError } from './errors.ts';
import { HnswIndex, searchEf } from './hnsw.ts';
import { Journal, type Op } from './journal.ts';
import { GalleryLock } from './lock.ts';
import type { PatchIndex } from './patch-index.ts';

export { GalleryError } from './errors.ts';

interface Entry {
  id: string;
  metadata?: Record<string, unknown>;
  rows: number;
  cols: number;
  /** [rows·cols, D], L2-normalised */
  patches: Float32Array;
  /** [D], L2-normalised */
  pooled: Float32Array;
  labels: number[];
  addedAt: string;
  /** PNG of the model's input (its patch grid is the embeddings'), when the add carried one. */
  image?: Buffer;
}

/** An entry before the index has labelled its patches. */
type Unlabelled = Omit<Entry, 'labels'>;

/** What `get` tells of an image. */
export interface ImageInfo {
  id: string;
  metadata?: Record<string, unknown>;
  patches: number;
  grid: [number, number];
  addedAt: string;
  /** Whether its PNG is stored (GET /v1/images/{id}). */
  image: boolean;
}

export interface SearchHit {
  id: string;
  metadata?: Record<string, unknown>;
  /** Mean over query patches of the best cosine similarity to this image's patches (MaxSim). */
  score: number;
  pooledScore?: number;
  /** For each query patch, its best match in this image (grid coordinates). */
  matches: { query: [number, number]; gallery: [number, number]; similarity: number }[];
}

export interface NewImage {
  id: string;
  /** [rows·cols, D] patch embeddings (normalised on the way in). */
  patches: Float32Array;
  /** [D] pooled embedding. */
  pooled: Float32Array;
  rows: number;
  cols: number;
  metadata?: Record<string, unknown>;
  /** PNG of the image as the model saw it, for display. */
  image?: Uint8Array;
}

/** A gallery patch near a query embedding. */
export interface PatchHit {
  id: string;
  /** [row, col] in the gallery image's patch grid. */
  patch: [number, number];
  similarity: number;
}

/** One request's changes, written as one unit: all of them, or (on failure) none. */
export type Change = { add: NewImage } | { remove: string };

const JOURNAL = 'journal.log';
const META = 'gallery.json';
const INDEX_META = 'index.json';
/** 2: the index holds no hnswlib delete marks (hnsw.ts); older snapshots are rebuilt from the journal. */
const SNAPSHOT_FORMAT = 2;
/** Longest stretch a search runs without yielding to the event loop. */
const SLICE_MS = 2;

/** Compaction pays when removed patches outnumber live ones more than twice (and are not a handful). */
export function shouldCompact(live: number, removed: number): boolean {
  return removed >= 1024 && removed > 2 * live;
}

function normalize(v: Float32Array, dim: number): Float32Array {
  const out = new Float32Array(v.length);
  for (let o = 0; o < v.length; o += dim) {
    let n = 0;
    for (let j = 0; j < dim; j++) n += v[o + j] ** 2;
    const inv = 1 / Math.max(Math.sqrt(n), 1e-12);
    for (let j = 0; j < dim; j++) out[o + j] = v[o + j] * inv;
  }
  return out;
}

const b64 = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');
const fromB64 = (s: string) => {
  const b = Buffer.from(s, 'base64');
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
};

export class Gallery {
  private readonly entries = new Map<string, Entry>();
  /** Index label → [image id, patch index]; null once removed. */
  private owners: ([string, number] | null)[] = [];
  private removed = 0;
  private dirty = false;
  /** Counts commits: what was computed from the gallery is stale when it changed. */
  version = 0;
  private closed = false;

  private constructor(
    readonly dir: string,
    readonly dim: number,
    private index: PatchIndex,
    private readonly journal: Journal,
    private readonly lock: GalleryLock,
    private readonly log: (s: string) => void,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  static open(dir: string, modelId: string, dim: number, log: (s: string) => void = () => {}): Gallery {
    mkdirSync(dir, { recursive: true });
    const lock = GalleryLock.acquire(dir);
    try {
      const metaPath = join(dir, META);
      if (existsSync(metaPath)) {
        const meta = JSON.parse(readFileSync(metaPath, 'utf8')) as { modelId: string; dim: number };
        if (meta.modelId !== modelId || meta.dim !== dim) {
          throw new GalleryError(
            'mismatch',
            `gallery ${dir} was built with model '${meta.modelId}' (dim ${meta.dim}); this server runs '${modelId}' (dim ${dim}). Use another --gallery directory.`,
          );
        }
      } else {
        try {
          writeAtomic(
            metaPath,
            JSON.stringify({ formatVersion: 1, modelId, dim, createdAt: new Date().toISOString() }, null, 2),
          );
        } catch (e) {
          throw new GalleryError('storage', `gallery ${dir}: cannot create ${META} (${(e as Error).message})`);
        }
      }
      rmSync(join(dir, `${INDEX_META}.tmp`), { force: true });
      rmSync(join(dir, 'index.tmp'), { force: true });
      const { journal, records } = Journal.open(join(dir, JOURNAL), log);
      const snap = loadSnapshot(dir, dim, records.length, log);
      const g = new Gallery(dir, dim, snap?.index ?? HnswIndex.create(dim), journal, lock, log);
      g.dirty = !snap;
      const covered = snap?.records ?? 0;
      records.forEach((ops, i) => {
        for (const op of ops) g.apply(op, i >= covered);
      });
      const live = g.owners.length - g.removed;
      if (shouldCompact(live, g.removed)) g.compact();
      return g;
    } catch (e) {
      lock.release();
      throw e;
    }
  }

  /**
   * Applies a journal operation read back on open; `indexIt`: also to the index (not for records
   * its snapshot holds).
   */
  private apply(op: Op, indexIt: boolean): void {
    if (op.op === 'delete') {
      this.drop(op.id);
      return;
    }
    this.put(
      {
        id: op.id,
        metadata: op.metadata,
        rows: op.rows,
        cols: op.cols,
        patches: fromB64(op.patches),
        pooled: fromB64(op.pooled),
        addedAt: op.addedAt,
        ...(op.image ? { image: Buffer.from(op.image, 'base64') } : {}),
      },
      indexIt,
    );
  }

  /** Adds an image in memory, labelling its patches; `indexIt`: also to the index. */
  private put(e: Unlabelled, indexIt: boolean): void {
    const labels = Array.from({ length: e.rows * e.cols }, (_, p) => this.owners.push([e.id, p]) - 1);
    if (indexIt) this.index.add(e.patches, labels);
    this.entries.set(e.id, { ...e, labels });
  }

  /** Removes an image in memory and from the index; an id not present is a no-op. */
  private drop(id: string): void {
    const e = this.entries.get(id);
    if (!e) return;
    // Also for records the snapshot covers: removal is kept beside the index, not in its snapshot.
    this.index.remove(e.labels);
    for (const l of e.labels) this.owners[l] = null;
    this.removed += e.labels.length;
    this.entries.delete(id);
  }

  /**
   * Rewrites the journal with the live images only and rebuilds the index from them. The
   * snapshot is removed first: until the new journal is in place the old journal is the truth.
   */
  private compact(): void {
    const before = { bytes: this.journal.bytes, patches: this.owners.length };
    const live = [...this.entries.values()];
    rmSync(join(this.dir, INDEX_META), { force: true });
    syncDir(this.dir);
    this.journal.rewrite(live.map((e) => [this.addOp(e)]));
    this.owners = [];
    this.removed = 0;
    this.entries.clear();
    this.index = HnswIndex.create(this.dim);
    for (const e of live) this.put(e, true);
    this.dirty = true;
    this.snapshot();
    this.log(
      `gallery: compacted ${this.dir}: journal ${before.bytes} → ${this.journal.bytes} bytes, index ${before.patches} → ${this.owners.length} patches`,
    );
  }

  private addOp(e: Unlabelled): Op {
    return {
      op: 'add',
      id: e.id,
      metadata: e.metadata,
      rows: e.rows,
      cols: e.cols,
      patches: b64(e.patches),
      pooled: b64(e.pooled),
      addedAt: e.addedAt,
      ...(e.image ? { image: Buffer.from(e.image).toString('base64') } : {}),
    };
  }

  /**
   * Writes `changes` as one journal record, then applies them: durable when this returns. Adding an
   * id that exists replaces it; removing one that does not is a no-op. Throws GalleryError with
   * nothing changed when the record cannot be serialised ('invalid') or written ('storage').
   */
  commit(changes: Change[]): void {
    if (this.closed) throw new GalleryError('storage', `gallery ${this.dir} is closed`);
    const ops: Op[] = [];
    /** The same operations in memory, in order: an id to drop or an image to put. */
    const steps: (string | Unlabelled)[] = [];
    const present = new Set(this.entries.keys());
    const addedAt = new Date().toISOString();
    for (const c of changes) {
      const id = 'add' in c ? c.add.id : c.remove;
      if (present.has(id)) {
        ops.push({ op: 'delete', id });
        steps.push(id);
      }
      present.delete(id);
      if ('add' in c) {
        const a = c.add;
        const entry: Unlabelled = {
          id,
          metadata: a.metadata,
          rows: a.rows,
          cols: a.cols,
          patches: normalize(a.patches, this.dim),
          pooled: normalize(a.pooled, this.dim),
          addedAt,
          // An empty PNG is no image, as its empty base64 reads back on open.
          ...(a.image?.length ? { image: Buffer.from(a.image) } : {}),
        };
        ops.push(this.addOp(entry));
        steps.push(entry);
        present.add(id);
      }
    }
    if (ops.length === 0) return;
    this.journal.append(ops);
    this.dirty = true;
    this.version++;
    for (const s of steps) {
      if (typeof s === 'string') this.drop(s);
      else this.put(s, true);
    }
  }

  /** Adds (or replaces) an image; durable when this returns. */
  add(
    id: string,
    patches: Float32Array,
    pooled: Float32Array,
    rows: number,
    cols: number,
    metadata?: Record<string, unknown>,
  ): void {
    this.commit([{ add: { id, patches, pooled, rows, cols, metadata } }]);
  }

  remove(id: string): boolean {
    if (!this.entries.has(id)) return false;
    this.commit([{ remove: id }]);
    return true;
  }

  /** Journal and index sizes: what compaction reclaims. */
  get stats(): { images: number; livePatches: number; removedPatches: number; journalBytes: number } {
    return {
      images: this.entries.size,
      livePatches: this.owners.length - this.removed,
      removedPatches: this.removed,
      journalBytes: this.journal.bytes,
    };
  }

  has(id: string): boolean {
    return this.entries.has(id);
  }

  get(id: string): ImageInfo | undefined {
    const e = this.entries.get(id);
    if (!e) return undefined;
    const { metadata, rows, cols, addedAt } = e;
    return { id, metadata, patches: rows * cols, grid: [rows, cols], addedAt, image: Boolean(e.image) };
  }

  /** Images in the order they were added, a page at a time. */
  list(offset: number, limit: number): { total: number; items: ImageInfo[] } {
    const ids = [...this.entries.keys()].slice(offset, offset + limit);
    return { total: this.entries.size, items: ids.map((id) => this.get(id)!) };
  }

  /** The stored PNG of an image, if its add carried one. */
  image(id: string): Buffer | undefined {
    return this.entries.get(id)?.image;
  }

  /** Pooled embeddings of up to `limit` images (evenly spaced in adding order), for a map. */
  pooledSample(limit: number): {
    ids: string[];
    pooled: Float32Array;
    metadata: (Record<string, unknown> | undefined)[];
  } {
    const all = [...this.entries.values()];
    const step = Math.max(1, all.length / limit);
    const picked = Array.from({ length: Math.min(limit, all.length) }, (_, i) => all[Math.floor(i * step)]);
    const pooled = new Float32Array(picked.length * this.dim);
    picked.forEach((e, i) => pooled.set(e.pooled, i * this.dim));
    return { ids: picked.map((e) => e.id), pooled, metadata: picked.map((e) => e.metadata) };
  }

  /**
   * The gallery patches nearest to each of `count` query embeddings [count, D], compared as the
   * predictor's targets are (layer-normalised, so by cosine of the centred vectors): candidates
   * from the index, then an exact rerank.
   */
  nearestPatches(queries: Float32Array, count: number, k: number): PatchHit[][] {
    const d = this.dim;
    const centred = (v: Float32Array) => {
      let mean = 0;
      for (const x of v) mean += x / d;
      const c = v.map((x) => x - mean);
      const norm = Math.hypot(...c) || 1;
      return c.map((x) => x / norm);
    };
    const live = this.owners.length - this.removed;
    if (live === 0) return Array.from({ length: count }, () => []);
    const breadth = searchEf(this.index.stored);
    return Array.from({ length: count }, (_, t) => {
      const q = centred(queries.subarray(t * d, (t + 1) * d));
      const hits: PatchHit[] = [];
      for (const l of this.index.search(q, Math.min(live, Math.max(32, 4 * k)), breadth)) {
        const owner = this.owners[l];
        const e = owner && this.entries.get(owner[0]);
        if (!owner || !e) continue;
        const g = centred(e.patches.subarray(owner[1] * d, (owner[1] + 1) * d));
        let s = 0;
        for (let j = 0; j < d; j++) s += q[j] * g[j];
        hits.push({ id: e.id, patch: [Math.floor(owner[1] / e.cols), owner[1] % e.cols], similarity: s });
      }
      return hits.sort((a, b) => b.similarity - a.similarity).slice(0, k);
    });
  }

  /**
   * Nearest gallery images for query patches [nq, D] at grid positions `positions` (row, col):
   * the index finds candidate images per query patch, then each candidate is scored exactly by
   * MaxSim. The index is synchronous, so the work is cut into slices of at most SLICE_MS that
   * yield to the event loop in between: a large search delays other requests by a slice, not by
   * its length.
   */
  async search(
    query: Float32Array,
    positions: [number, number][],
    pooled: Float32Array,
    k: number,
    withPooled: boolean,
  ): Promise<SearchHit[]> {
    let sliceStart = performance.now();
    const maybeYield = async () => {
      if (performance.now() - sliceStart > SLICE_MS) {
        await new Promise((r) => setImmediate(r));
        sliceStart = performance.now();
      }
    };
    const d = this.dim;
    const q = normalize(query, d);
    const nq = positions.length;
    const live = this.owners.length - this.removed;
    if (live === 0) return [];
    const perPatch = Math.min(live, Math.max(16, 4 * k));
    const breadth = searchEf(this.index.stored);
    const candidates = new Set<string>();
    for (let i = 0; i < nq; i++) {
      await maybeYield();
      for (const l of this.index.search(q.subarray(i * d, (i + 1) * d), perPatch, breadth)) {
        const owner = this.owners[l];
        if (owner) candidates.add(owner[0]);
      }
    }
    const qp = normalize(pooled, d);
    const hits: SearchHit[] = [];
    for (const id of candidates) {
      await maybeYield();
      // The image may have been deleted while this search yielded.
      const e = this.entries.get(id);
      if (!e) continue;
      const n = e.rows * e.cols;
      let total = 0;
      const matches: SearchHit['matches'] = [];
      for (let i = 0; i < nq; i++) {
        let best = -Infinity;
        let at = 0;
        for (let p = 0; p < n; p++) {
          let s = 0;
          for (let j = 0; j < d; j++) s += q[i * d + j] * e.patches[p * d + j];
          if (s > best) {
            best = s;
            at = p;
          }
        }
        total += best;
        matches.push({ query: positions[i], gallery: [Math.floor(at / e.cols), at % e.cols], similarity: best });
      }
      const hit: SearchHit = { id, metadata: e.metadata, score: total / nq, matches };
      if (withPooled) {
        let s = 0;
        for (let j = 0; j < d; j++) s += qp[j] * e.pooled[j];
        hit.pooledScore = s;
      }
      hits.push(hit);
    }
    return hits.sort((a, b) => b.score - a.score).slice(0, k);
  }

  /**
   * Writes an index snapshot (checksummed; index.json switches to it last) so the next open skips
   * the rebuild. A failure (disk full) leaves the previous snapshot pair and is logged, not thrown:
   * the journal holds everything, and the next open replays what the snapshot lacks.
   */
  snapshot(): void {
    if (!this.dirty && existsSync(join(this.dir, INDEX_META))) return;
    const tmp = join(this.dir, 'index.tmp');
    try {
      this.index.save(tmp);
      // hnswlib writes through a C++ stream that does not report a short write (a full disk):
      // read the file back before trusting it.
      if (HnswIndex.load(tmp, this.dim).stored !== this.index.stored)
        throw new Error('the written index reads back short');
      syncFile(tmp);
      const bytes = readFileSync(tmp);
      const digest = sha256(bytes);
      const file = `index-${digest.slice(0, 16)}.hnsw`;
      moveInto(tmp, join(this.dir, file));
      writeAtomic(
        join(this.dir, INDEX_META),
        JSON.stringify({
          format: SNAPSHOT_FORMAT,
          file,
          records: this.journal.records,
          bytes: bytes.length,
          sha256: digest,
        }),
      );
      for (const f of readdirSync(this.dir))
        if (/^index-[0-9a-f]{16}\.hnsw$/.test(f) && f !== file) rmSync(join(this.dir, f));
      this.dirty = false;
    } catch (e) {
      rmSync(tmp, { force: true });
      this.log(
        `gallery: index snapshot not written (${(e as Error).message}); the next start replays the journal instead`,
      );
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.snapshot();
      this.journal.close();
    } finally {
      this.lock.release();
    }
  }
}

/**
 * The snapshot index.json points to, and how many journal records it covers; null (logged) when
 * there is none or it cannot be used: the index is then rebuilt from the journal.
 */
function loadSnapshot(
  dir: string,
  dim: number,
  records: number,
  log: (s: string) => void,
): { index: PatchIndex; records: number } | null {
  const metaPath = join(dir, INDEX_META);
  if (!existsSync(metaPath)) return null;
  const why = (() => {
    let meta: { format?: number; file: string; records: number; sha256: string; bytes: number };
    try {
      meta = JSON.parse(readFileSync(metaPath, 'utf8'));
    } catch {
      return `${INDEX_META} is unreadable`;
    }
    if (meta.format !== SNAPSHOT_FORMAT) return `it is of an older format`;
    const idxPath = join(dir, meta.file);
    const bytes = existsSync(idxPath) ? readFileSync(idxPath) : Buffer.alloc(0);
    if (bytes.length !== meta.bytes || sha256(bytes) !== meta.sha256)
      return `${idxPath} is missing, corrupt or truncated (checksum mismatch)`;
    if (meta.records > records) return `it covers ${meta.records} journal records but ${JOURNAL} has ${records}`;
    return { index: HnswIndex.load(idxPath, dim), records: meta.records };
  })();
  if (typeof why !== 'string') return why;
  log(`gallery: not using the index snapshot of ${dir}: ${why}; rebuilding the index from ${JOURNAL}`);
  return null;
}
