/**
 * The patch gallery: every patch embedding of every added image, for nearest-patch retrieval.
 * The journal (journal.ts) is the source of truth; the patch index (patch-index.ts) finds
 * candidate images, which are then scored exactly by MaxSim over their stored patches.
 *
 * The index is rebuilt from the journal on open, or loaded from a snapshot written on close:
 * index-<sha256>.hnsw, made current by index.json (renamed into place last), so a crash
 * mid-snapshot leaves the previous consistent pair.
 */
import { createHash } from 'node:crypto';
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { GalleryError } from './errors.ts';
import { HnswIndex, searchEf } from './hnsw.ts';
import { Journal, type Op } from './journal.ts';
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

const JOURNAL = 'journal.log';
const META = 'gallery.json';
const INDEX_META = 'index.json';
/** Longest stretch a search runs without yielding to the event loop. */
const SLICE_MS = 2;

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
  private readonly owners: ([string, number] | null)[] = [];
  private removed = 0;
  private dirty = false;
  private closed = false;

  private constructor(
    readonly dir: string,
    readonly dim: number,
    private index: PatchIndex,
    private readonly journal: Journal,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  static open(dir: string, modelId: string, dim: number, log: (s: string) => void = () => {}): Gallery {
    mkdirSync(dir, { recursive: true });
    const metaPath = join(dir, META);
    if (existsSync(metaPath)) {
      const meta = JSON.parse(readFileSync(metaPath, 'utf8')) as { modelId: string; dim: number };
      if (meta.modelId !== modelId || meta.dim !== dim) {
        throw new GalleryError(
          `gallery ${dir} was built with model '${meta.modelId}' (dim ${meta.dim}); this server runs '${modelId}' (dim ${dim}). Use another --gallery directory.`,
        );
      }
    } else
      writeFileSync(
        metaPath,
        JSON.stringify({ formatVersion: 1, modelId, dim, createdAt: new Date().toISOString() }, null, 2),
      );
    const { journal, ops } = Journal.open(join(dir, JOURNAL), log);
    const snap = loadSnapshot(dir, dim, ops.length);
    const g = new Gallery(dir, dim, snap?.index ?? HnswIndex.create(dim), journal);
    const covered = snap?.records ?? 0;
    for (let i = 0; i < ops.length; i++) g.apply(ops[i], i >= covered);
    return g;
  }

  private apply(op: Op, indexIt: boolean): void {
    if (op.op === 'delete') {
      const e = this.entries.get(op.id);
      if (!e) return;
      if (indexIt) this.index.remove(e.labels);
      for (const l of e.labels) this.owners[l] = null;
      this.removed += e.labels.length;
      this.entries.delete(op.id);
      return;
    }
    const patches = fromB64(op.patches);
    const n = op.rows * op.cols;
    const labels = Array.from({ length: n }, (_, p) => this.owners.push([op.id, p]) - 1);
    if (indexIt) this.index.add(patches, labels);
    this.entries.set(op.id, {
      id: op.id,
      metadata: op.metadata,
      rows: op.rows,
      cols: op.cols,
      patches,
      pooled: fromB64(op.pooled),
      labels,
      addedAt: op.addedAt,
    });
  }

  private write(op: Op): void {
    this.journal.append(op);
    this.dirty = true;
    this.apply(op, true);
  }

  has(id: string): boolean {
    return this.entries.has(id);
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
    if (this.entries.has(id)) this.remove(id);
    this.write({
      op: 'add',
      id,
      metadata,
      rows,
      cols,
      patches: b64(normalize(patches, this.dim)),
      pooled: b64(normalize(pooled, this.dim)),
      addedAt: new Date().toISOString(),
    });
  }

  remove(id: string): boolean {
    if (!this.entries.has(id)) return false;
    this.write({ op: 'delete', id });
    return true;
  }

  get(
    id: string,
  ):
    | { id: string; metadata?: Record<string, unknown>; patches: number; grid: [number, number]; addedAt: string }
    | undefined {
    const e = this.entries.get(id);
    return (
      e && { id: e.id, metadata: e.metadata, patches: e.rows * e.cols, grid: [e.rows, e.cols], addedAt: e.addedAt }
    );
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

  /** Writes an index snapshot (checksummed; index.json switches to it last) so the next open skips the rebuild. */
  snapshot(): void {
    if (!this.dirty && existsSync(join(this.dir, INDEX_META))) return;
    const tmp = join(this.dir, 'index.tmp');
    this.index.save(tmp);
    const fd = openSync(tmp, 'r+');
    fsyncSync(fd);
    closeSync(fd);
    const bytes = readFileSync(tmp);
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    const file = `index-${sha256.slice(0, 16)}.hnsw`;
    renameSync(tmp, join(this.dir, file));
    writeFileSync(
      join(this.dir, `${INDEX_META}.tmp`),
      JSON.stringify({ file, records: this.journal.records, bytes: bytes.length, sha256 }),
    );
    renameSync(join(this.dir, `${INDEX_META}.tmp`), join(this.dir, INDEX_META));
    for (const f of readdirSync(this.dir))
      if (/^index-[0-9a-f]{16}\.hnsw$/.test(f) && f !== file) rmSync(join(this.dir, f));
    this.dirty = false;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.snapshot();
    this.journal.close();
  }
}

/** The snapshot index.json points to, if its checksum matches, and how many journal records it covers. */
function loadSnapshot(dir: string, dim: number, records: number): { index: PatchIndex; records: number } | null {
  const metaPath = join(dir, INDEX_META);
  if (!existsSync(metaPath)) return null;
  const meta = JSON.parse(readFileSync(metaPath, 'utf8')) as {
    file: string;
    records: number;
    sha256: string;
    bytes: number;
  };
  const idxPath = join(dir, meta.file);
  const bytes = existsSync(idxPath) ? readFileSync(idxPath) : Buffer.alloc(0);
  if (bytes.length !== meta.bytes || createHash('sha256').update(bytes).digest('hex') !== meta.sha256) {
    throw new GalleryError(
      `gallery index ${idxPath} is missing, corrupt or truncated (checksum mismatch); delete ${INDEX_META} to rebuild the index from ${JOURNAL}`,
    );
  }
  if (meta.records > records)
    throw new GalleryError(
      `gallery index ${idxPath} covers ${meta.records} journal records but ${JOURNAL} has ${records}; delete ${INDEX_META} to rebuild`,
    );
  return { index: HnswIndex.load(idxPath, dim), records: meta.records };
}
