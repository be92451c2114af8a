/**
 * The patch gallery: every patch embedding of every added image in one HNSW index (hnswlib-node,
 * cosine), for nearest-patch retrieval. The only hnswlib-node import.
 *
 * Durability: each add/delete is appended to journal.log as one checksummed line and fsynced
 * before it is acknowledged, so every acknowledged add survives kill -9. A torn last line (a write
 * interrupted before its acknowledgement) is dropped with a warning; a bad line anywhere else is
 * corruption and the gallery refuses to open. The HNSW index is rebuilt from the journal on open,
 * or loaded from a snapshot written on close: index-<sha256>.hnsw, made current by index.json
 * (renamed into place last), so a crash mid-snapshot leaves the previous consistent pair.
 */
import { createHash } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import hnswlib from 'hnswlib-node';

export class GalleryError extends Error {}

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
/** Longest stretch a search runs without yielding to the event loop. */
const SLICE_MS = 2;

/**
 * HNSW search breadth by index size, from `npm run bench:serve` (recall@10 vs exact on clustered
 * 192-d vectors): 100k patches reach 0.998 at ef 128; 1M reach 0.986 at ef 256 (0.906 at 128).
 */
export function searchEf(patches: number): number {
  return patches <= 200_000 ? 128 : 256;
}
const META = 'gallery.json';
const INDEX_META = 'index.json';

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
const lineHash = (payload: string) => createHash('sha256').update(payload).digest('hex').slice(0, 16);

export class Gallery {
  private readonly entries = new Map<string, Entry>();
  /** HNSW label → [image id, patch index] */
  private readonly owners: ([string, number] | null)[] = [];
  private index: InstanceType<typeof hnswlib.HierarchicalNSW>;
  private journalFd: number;
  private records = 0;
  private dirty = false;

  private constructor(readonly dir: string, readonly modelId: string, readonly dim: number, capacity: number) {
    this.index = new hnswlib.HierarchicalNSW('cosine', dim);
    this.index.initIndex(capacity, 16, 200, 100);
    this.journalFd = -1;
  }

  get size(): number {
    return this.entries.size;
  }

  static open(dir: string, modelId: string, dim: number, log: (s: string) => void = () => {}): Gallery {
    mkdirSync(dir, { recursive: true });
    const metaPath = join(dir, META);
    if (existsSync(metaPath)) {
      const meta = JSON.parse(readFileSync(metaPath, 'utf8')) as { modelId: string; dim: number };
      if (meta.modelId !== modelId || meta.dim !== dim) {
        throw new GalleryError(`gallery ${dir} was built with model '${meta.modelId}' (dim ${meta.dim}); this server runs '${modelId}' (dim ${dim}). Use another --gallery directory.`);
      }
    } else writeFileSync(metaPath, JSON.stringify({ formatVersion: 1, modelId, dim, createdAt: new Date().toISOString() }, null, 2));
    const g = new Gallery(dir, modelId, dim, 1024);
    g.replay(log);
    g.journalFd = openSync(join(dir, JOURNAL), 'a');
    return g;
  }

  /** Reads the journal, rebuilding entries (and the index, unless a valid snapshot covers them). */
  private replay(log: (s: string) => void): void {
    const path = join(this.dir, JOURNAL);
    if (!existsSync(path)) return;
    const text = readFileSync(path, 'utf8');
    const lines = text.split('\n');
    const complete = text.endsWith('\n') ? lines.slice(0, -1) : lines;
    let goodBytes = 0;
    const ops: { op: string; id: string; [k: string]: unknown }[] = [];
    for (let i = 0; i < complete.length; i++) {
      const line = complete[i];
      const sp = line.indexOf(' ');
      const payload = line.slice(sp + 1);
      const last = i === complete.length - 1;
      const ok = sp === 16 && line.slice(0, 16) === lineHash(payload) && (!last || text.endsWith('\n'));
      if (!ok) {
        if (last) {
          // An interrupted append: it was never acknowledged. Drop it.
          log(`gallery: dropping an incomplete last journal record (${line.length} bytes) in ${path}`);
          truncateSync(path, goodBytes);
          break;
        }
        throw new GalleryError(`gallery journal ${path} is corrupt at record ${i + 1} (checksum mismatch); it will not be loaded`);
      }
      goodBytes += Buffer.byteLength(line) + 1;
      ops.push(JSON.parse(payload));
    }
    const snap = this.loadSnapshot(ops.length);
    for (let i = 0; i < ops.length; i++) this.applyOp(ops[i], i >= snap);
    this.records = ops.length;
  }

  /** Loads the snapshot index.json points to, if its checksum matches; returns how many journal records it covers. */
  private loadSnapshot(records: number): number {
    const metaPath = join(this.dir, INDEX_META);
    if (!existsSync(metaPath)) return 0;
    const meta = JSON.parse(readFileSync(metaPath, 'utf8')) as { file: string; records: number; sha256: string; bytes: number };
    const idxPath = join(this.dir, meta.file);
    const bytes = existsSync(idxPath) ? readFileSync(idxPath) : Buffer.alloc(0);
    if (bytes.length !== meta.bytes || createHash('sha256').update(bytes).digest('hex') !== meta.sha256) {
      throw new GalleryError(`gallery index ${idxPath} is missing, corrupt or truncated (checksum mismatch); delete ${INDEX_META} to rebuild the index from ${JOURNAL}`);
    }
    if (meta.records > records) throw new GalleryError(`gallery index ${idxPath} covers ${meta.records} journal records but ${JOURNAL} has ${records}; delete ${INDEX_META} to rebuild`);
    this.index.readIndexSync(idxPath, true);
    return meta.records;
  }

  private applyOp(op: { op: string; id: string; [k: string]: unknown }, indexIt: boolean): void {
    if (op.op === 'delete') {
      const e = this.entries.get(op.id);
      if (!e) return;
      for (const l of e.labels) {
        if (indexIt) this.index.markDelete(l);
        this.owners[l] = null;
      }
      this.entries.delete(op.id);
      return;
    }
    const patches = fromB64(op.patches as string);
    const entry: Entry = {
      id: op.id, metadata: op.metadata as Record<string, unknown> | undefined, rows: op.rows as number, cols: op.cols as number,
      patches, pooled: fromB64(op.pooled as string), labels: [], addedAt: op.addedAt as string,
    };
    const n = entry.rows * entry.cols;
    if (indexIt && this.index.getCurrentCount() + n > this.index.getMaxElements()) this.index.resizeIndex(Math.max(2 * this.index.getMaxElements(), this.index.getCurrentCount() + n));
    for (let p = 0; p < n; p++) {
      const label = this.owners.length;
      this.owners.push([entry.id, p]);
      entry.labels.push(label);
      if (indexIt) this.index.addPoint(Array.from(patches.subarray(p * this.dim, (p + 1) * this.dim)), label);
    }
    this.entries.set(entry.id, entry);
  }

  private append(op: Record<string, unknown>): void {
    const payload = JSON.stringify(op);
    writeSync(this.journalFd, `${lineHash(payload)} ${payload}\n`);
    fsyncSync(this.journalFd);
    this.records++;
    this.dirty = true;
  }

  has(id: string): boolean {
    return this.entries.has(id);
  }

  /** Adds (or replaces) an image; durable when this returns. */
  add(id: string, patches: Float32Array, pooled: Float32Array, rows: number, cols: number, metadata?: Record<string, unknown>): void {
    if (this.entries.has(id)) this.remove(id);
    const op = { op: 'add', id, metadata, rows, cols, patches: b64(normalize(patches, this.dim)), pooled: b64(normalize(pooled, this.dim)), addedAt: new Date().toISOString() };
    this.append(op);
    this.applyOp(op, true);
  }

  remove(id: string): boolean {
    if (!this.entries.has(id)) return false;
    const op = { op: 'delete', id };
    this.append(op);
    this.applyOp(op, true);
    return true;
  }

  get(id: string): { id: string; metadata?: Record<string, unknown>; patches: number; grid: [number, number]; addedAt: string } | undefined {
    const e = this.entries.get(id);
    return e && { id: e.id, metadata: e.metadata, patches: e.rows * e.cols, grid: [e.rows, e.cols], addedAt: e.addedAt };
  }

  /**
   * Nearest gallery images for query patches [nq, D] at grid positions `positions` (row, col):
   * HNSW finds candidate images per query patch, then each candidate is scored exactly by MaxSim.
   * hnswlib-node is synchronous, so the work is cut into slices of at most SLICE_MS that yield to
   * the event loop in between: a large search delays other requests by a slice, not by its length.
   */
  async search(query: Float32Array, positions: [number, number][], pooled: Float32Array, k: number, withPooled: boolean): Promise<SearchHit[]> {
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
    const live = this.index.getCurrentCount() - this.deletedCount();
    if (live === 0) return [];
    const perPatch = Math.min(live, Math.max(16, 4 * k));
    this.index.setEf(Math.max(searchEf(this.index.getCurrentCount()), perPatch));
    const candidates = new Set<string>();
    for (let i = 0; i < nq; i++) {
      await maybeYield();
      const { neighbors } = this.index.searchKnn(Array.from(q.subarray(i * d, (i + 1) * d)), perPatch);
      for (const l of neighbors) {
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

  private deletedCount(): number {
    let n = 0;
    for (const o of this.owners) if (!o) n++;
    return n;
  }

  /** Writes an HNSW snapshot (checksummed; index.json switches to it last) so the next open skips the rebuild. */
  snapshot(): void {
    if (!this.dirty && existsSync(join(this.dir, INDEX_META))) return;
    const tmp = join(this.dir, 'index.tmp');
    this.index.writeIndexSync(tmp);
    const fd = openSync(tmp, 'r+');
    fsyncSync(fd);
    closeSync(fd);
    const bytes = readFileSync(tmp);
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    const file = `index-${sha256.slice(0, 16)}.hnsw`;
    renameSync(tmp, join(this.dir, file));
    writeFileSync(join(this.dir, `${INDEX_META}.tmp`), JSON.stringify({ file, records: this.records, bytes: bytes.length, sha256 }));
    renameSync(join(this.dir, `${INDEX_META}.tmp`), join(this.dir, INDEX_META));
    for (const f of readdirSync(this.dir)) if (/^index-[0-9a-f]{16}\.hnsw$/.test(f) && f !== file) rmSync(join(this.dir, f));
    this.dirty = false;
  }

  close(): void {
    if (this.journalFd >= 0) {
      this.snapshot();
      closeSync(this.journalFd);
      this.journalFd = -1;
    }
  }
}
