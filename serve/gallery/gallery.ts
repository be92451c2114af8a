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
 * than twice, the journal and the index are compacted on open (journal.ts `rewrite`); while
 * serving, then too, or once the journal's dead bytes pass both a floor and its live bytes
 * (`compactOnline`).
 *
 * gallery.json records whose embeddings it holds: the model id, the dimension, and the sha256 of
 * the encoder file (not of the package: a new probe head leaves the embeddings as they were).
 * Another encoder is refused, or re-embeds the stored pictures (`reembed`).
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { moveInto, syncDir, syncFile, writeAtomic } from '../../format/atomic.ts';
import { sha256 } from '../../format/package.ts';
import { GalleryError } from './errors.ts';
import { HnswIndex, searchEf } from './hnsw.ts';
import { Journal, JournalFile, type Op } from './journal.ts';
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
  /** About the bytes of its journal record: what a compaction would write for it. */
  bytes: number;
  addedAt: string;
  /** PNG of the model's input (its patch grid is the embeddings'), when the add carried one. */
  image?: Buffer;
}

/** An entry before the index has labelled its patches. */
type Unlabelled = Omit<Entry, 'labels' | 'bytes'>;

/** Which encoder's embeddings a gallery holds. */
export interface Identity {
  modelId: string;
  dim: number;
  /** sha256 of the package's encoder file. */
  encoder: string;
}

export interface OpenOptions {
  /** The encoder's sha256: a gallery built with another is refused; one that recorded none adopts it. */
  encoder?: string;
  /** Journal bytes of removed and replaced images kept, beyond the live ones, before an online compaction. */
  garbageBytes?: number;
}

/** Stored pictures embedded by the new encoder: [n, rows·cols, D] tokens and [n, D] pooled. */
export type Reembed = (
  pictures: Buffer[],
) => Promise<{ tokens: Float32Array; pooled: Float32Array; rows: number; cols: number }>;

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
/** A re-embedded journal waiting to replace journal.log: `${JOURNAL}.reembed-` + its encoder's sha256[:16]. */
const STAGED = /^journal\.log\.reembed-([0-9a-f]{16})$/;
const INDEX_META = 'index.json';
/** 2: the index holds no hnswlib delete marks (hnsw.ts); older snapshots are rebuilt from the journal. */
const SNAPSHOT_FORMAT = 2;
/** Longest stretch a search runs without yielding to the event loop. */
const SLICE_MS = 2;

/** Compaction pays when removed patches outnumber live ones more than twice (and are not a handful). */
export function shouldCompact(live: number, removed: number): boolean {
  return removed >= 1024 && removed > 2 * live;
}

/** Default floor of `garbageBytes`: dead bytes below it are not worth a compaction's rewrite and index rebuild. */
export const GARBAGE_BYTES = 64 * 1024 * 1024;

/** gallery.json */
interface Meta {
  formatVersion: 1;
  modelId: string;
  dim: number;
  /** sha256 of the encoder file; absent in galleries written before it was recorded. */
  encoder?: string;
  createdAt: string;
  reembeddedAt?: string;
}

const short = (sha: string) => sha.slice(0, 16);

function readMeta(dir: string): Meta | null {
  const path = join(dir, META);
  return existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as Meta) : null;
}

function writeMeta(dir: string, meta: Meta): void {
  try {
    writeAtomic(join(dir, META), JSON.stringify(meta, null, 2));
  } catch (e) {
    throw new GalleryError('storage', `gallery ${dir}: cannot write ${META} (${(e as Error).message})`);
  }
}

/**
 * Ends a re-embedding a crash interrupted: its journal is the gallery's once gallery.json names its
 * encoder (the switch was made), and is discarded otherwise.
 */
function finishReembed(dir: string, log: (s: string) => void): void {
  const encoder = readMeta(dir)?.encoder;
  for (const f of readdirSync(dir)) {
    const m = STAGED.exec(f);
    if (!m) continue;
    if (encoder && short(encoder) === m[1]) {
      moveInto(join(dir, f), join(dir, JOURNAL));
      log(`gallery: completing the re-embedding of ${dir} that was interrupted after its switch to encoder ${m[1]}`);
    } else {
      rmSync(join(dir, f));
      syncDir(dir);
      log(
        `gallery: discarding a re-embedding of ${dir} that was interrupted before its switch; the gallery is as it was`,
      );
    }
  }
}

/** Checks (or records, for a new gallery or one that recorded no encoder) whose embeddings `dir` holds. */
function checkIdentity(
  dir: string,
  modelId: string,
  dim: number,
  encoder: string | undefined,
  log: (s: string) => void,
) {
  const meta = readMeta(dir);
  if (!meta) {
    writeMeta(dir, {
      formatVersion: 1,
      modelId,
      dim,
      ...(encoder ? { encoder } : {}),
      createdAt: new Date().toISOString(),
    });
    return;
  }
  const hint =
    'Start `ijepa serve --reembed` to re-embed its stored images with this package, or use another --gallery directory.';
  if (meta.modelId !== modelId || meta.dim !== dim) {
    throw new GalleryError(
      'mismatch',
      `gallery ${dir} was built with model '${meta.modelId}' (dim ${meta.dim}); this server runs '${modelId}' (dim ${dim}). ${hint}`,
    );
  }
  if (!encoder) return;
  if (!meta.encoder) {
    writeMeta(dir, { ...meta, encoder });
    log(
      `gallery: ${dir} recorded no encoder (written before galleries did); adopting this package's, encoder ${short(encoder)}`,
    );
  } else if (meta.encoder !== encoder) {
    throw new GalleryError(
      'mismatch',
      `gallery ${dir} was built with encoder ${short(meta.encoder)} (sha256, model '${meta.modelId}'); this package's encoder is ${short(encoder)} (model '${modelId}'): their embeddings are not comparable. ${hint}`,
    );
  }
}

/** About the bytes of `e`'s journal record (its base64 arrays and picture are most of it). */
function recordBytes(e: Unlabelled): number {
  const b64len = (n: number) => 4 * Math.ceil(n / 3);
  const meta = e.metadata ? JSON.stringify(e.metadata).length : 0;
  return b64len(e.patches.byteLength) + b64len(e.pooled.byteLength) + b64len(e.image?.length ?? 0) + meta + 200;
}

/** Commits made while an online compaction runs: its new journal and index take them too. */
interface Compaction {
  file: JournalFile;
  /** Their journal lines, as appended, to follow the live images' in the new journal. */
  lines: Buffer[];
  /** The new labels, entries and index, which take each commit at once. */
  next: Gallery;
}

/** Index candidates per query for the k nearest patches (`nearestPatches`), before the exact rerank. */
export const nearestCandidates = (k: number) => Math.max(32, 4 * k);
/** Index candidates per query patch of a MaxSim `search`, whose images are then scored exactly. */
export const searchCandidates = (k: number) => Math.max(16, 4 * k);

/** `v` less its mean, scaled to unit length (the zero vector stays zero). */
export function centred(v: Float32Array): Float32Array {
  const d = v.length;
  let mean = 0;
  for (const x of v) mean += x / d;
  const c = v.map((x) => x - mean);
  const norm = Math.hypot(...c) || 1;
  return c.map((x) => x / norm);
}

/**
 * The cosine of a centred unit query `q` (its elements summing to `qSum`) with the centred
 * gallery patch at `patches[at .. at + q.length]`, in one pass over it: centring the patch
 * subtracts its mean times the query's sum from the dot product, and d times its mean squared
 * from its power.
 */
export function centredCosine(q: Float32Array, qSum: number, patches: Float32Array, at: number): number {
  const d = q.length;
  let sum = 0;
  let power = 0;
  let dot = 0;
  for (let j = 0; j < d; j++, at++) {
    const x = patches[at];
    sum += x;
    power += x * x;
    dot += q[j] * x;
  }
  const spread = power - (sum * sum) / d;
  return (dot - (sum / d) * qSum) / (spread > 1e-12 ? Math.sqrt(spread) : 1);
}

/** Each `dim`-long row of `v` scaled to unit length. */
export function normalize(v: Float32Array, dim: number): Float32Array {
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
  private entries = new Map<string, Entry>();
  /** Index label → [image id, patch index]; null once removed. */
  private owners: ([string, number] | null)[] = [];
  private removed = 0;
  /** Sum of the live entries' `bytes`. */
  private liveBytes = 0;
  private compaction: Compaction | null = null;
  /** No online compaction before the journal reaches this size (set after one failed). */
  private compactAfter = 0;
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
    private readonly garbageBytes = GARBAGE_BYTES,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  static open(
    dir: string,
    modelId: string,
    dim: number,
    log: (s: string) => void = () => {},
    o: OpenOptions = {},
  ): Gallery {
    mkdirSync(dir, { recursive: true });
    const lock = GalleryLock.acquire(dir);
    try {
      finishReembed(dir, log);
      checkIdentity(dir, modelId, dim, o.encoder, log);
      rmSync(join(dir, `${INDEX_META}.tmp`), { force: true });
      rmSync(join(dir, 'index.tmp'), { force: true });
      const { journal, records } = Journal.open(join(dir, JOURNAL), log);
      const snap = loadSnapshot(dir, dim, records.length, log);
      const g = new Gallery(dir, dim, snap?.index ?? HnswIndex.create(dim), journal, lock, log, o.garbageBytes);
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
   * Re-embeds every image of the gallery at `dir` with another encoder (`ijepa serve --reembed`),
   * from the picture each add stored (the model's input pixels, lossless: exact when the new
   * package has the same input size). A no-op, returning 0, when the gallery already holds
   * `id`'s embeddings or does not exist; refused, changing nothing, when an image has no picture.
   * Crash-safe: the new journal is written and synced beside the old one, then gallery.json names
   * the new encoder (the switch), then the journal is renamed into place; an open after a crash
   * completes or discards it (`finishReembed`).
   */
  static async reembed(
    dir: string,
    id: Identity,
    embed: Reembed,
    log: (s: string) => void = () => {},
    batch = 32,
  ): Promise<number> {
    if (!existsSync(join(dir, META))) return 0;
    const lock = GalleryLock.acquire(dir);
    let staged: JournalFile | null = null;
    let switched = false;
    try {
      finishReembed(dir, log);
      const meta = readMeta(dir)!;
      if (meta.encoder === id.encoder && meta.modelId === id.modelId && meta.dim === id.dim) return 0;
      const { journal, records } = Journal.open(join(dir, JOURNAL), log);
      journal.close();
      const live = new Map<string, Extract<Op, { op: 'add' }>>();
      for (const ops of records)
        for (const op of ops) {
          live.delete(op.id);
          if (op.op === 'add') live.set(op.id, op);
        }
      const adds = [...live.values()];
      const bare = adds.filter((op) => !op.image);
      if (bare.length)
        throw new GalleryError(
          'mismatch',
          `cannot re-embed gallery ${dir}: ${bare.length} of ${adds.length} images have no stored picture (${bare
            .slice(0, 3)
            .map((op) => `'${op.id}'`)
            .join(
              ', ',
            )}${bare.length > 3 ? ', …' : ''}); \`ijepa index\` stores none, nor did adds before pictures were stored. Index the images into a new gallery instead.`,
        );
      const t0 = performance.now();
      staged = new JournalFile(join(dir, `${JOURNAL}.reembed-${short(id.encoder)}`));
      for (let s = 0; s < adds.length; s += batch) {
        const part = adds.slice(s, s + batch);
        const e = await embed(part.map((op) => Buffer.from(op.image!, 'base64')));
        const n = e.rows * e.cols * id.dim;
        part.forEach((op, k) =>
          staged!.write([
            {
              ...op,
              rows: e.rows,
              cols: e.cols,
              patches: b64(normalize(e.tokens.subarray(k * n, (k + 1) * n), id.dim)),
              pooled: b64(normalize(e.pooled.subarray(k * id.dim, (k + 1) * id.dim), id.dim)),
            },
          ]),
        );
      }
      staged.finish();
      // The snapshot numbers patches in the old journal's order.
      rmSync(join(dir, INDEX_META), { force: true });
      syncDir(dir);
      const { modelId, dim, encoder } = id;
      writeMeta(dir, { ...meta, modelId, dim, encoder, reembeddedAt: new Date().toISOString() });
      switched = true;
      moveInto(staged.path, join(dir, JOURNAL));
      log(
        `gallery: re-embedded ${adds.length} images of ${dir} with encoder ${short(encoder)} (model '${modelId}'; was ${meta.encoder ? short(meta.encoder) : 'unrecorded'}, model '${meta.modelId}') in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
      );
      return adds.length;
    } catch (e) {
      // After the switch the staged journal is the gallery's: the next open renames it into place.
      if (!switched) staged?.discard();
      throw e;
    } finally {
      lock.release();
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
  private put(e: Unlabelled, indexIt: boolean, bytes = recordBytes(e)): void {
    const labels = Array.from({ length: e.rows * e.cols }, (_, p) => this.owners.push([e.id, p]) - 1);
    if (indexIt) this.index.add(e.patches, labels);
    this.liveBytes += bytes;
    this.entries.set(e.id, { ...e, labels, bytes });
  }

  /** Removes an image in memory and from the index; an id not present is a no-op. */
  private drop(id: string): void {
    const e = this.entries.get(id);
    if (!e) return;
    // Also for records the snapshot covers: removal is kept beside the index, not in its snapshot.
    this.index.remove(e.labels);
    for (const l of e.labels) this.owners[l] = null;
    this.removed += e.labels.length;
    this.liveBytes -= e.bytes;
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
    this.liveBytes = 0;
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
    const line = this.journal.append(ops);
    this.dirty = true;
    this.version++;
    for (const s of steps) {
      if (typeof s === 'string') this.drop(s);
      else this.put(s, true);
    }
    if (this.compaction) {
      this.compaction.lines.push(line);
      for (const s of steps) {
        if (typeof s === 'string') this.compaction.next.drop(s);
        else this.compaction.next.put(s, true);
      }
    } else if (this.journal.bytes >= this.compactAfter) {
      // Removed patches slow every search (it visits them) and hold memory; dead bytes hold disk.
      const dead = this.journal.bytes - this.liveBytes;
      if (
        shouldCompact(this.owners.length - this.removed, this.removed) ||
        dead > Math.max(this.garbageBytes, this.liveBytes)
      )
        void this.compactOnline();
    }
  }

  /**
   * Compaction while serving, without stopping it. At its start the live images are labelled afresh
   * in a new gallery state (`next`), in the order of the new journal; from then on each commit goes
   * to the old journal first, as always, and then to `next` at once. In the background, a slice at a
   * time (SLICE_MS, yielding in between), the images live at the start are written to the new
   * journal and added to the new index; the commits' lines follow them; one synchronous step then
   * switches journal and state. Until the new journal's rename the old one is the truth, so a crash
   * at any point loses nothing acknowledged. The index snapshot goes first: it numbers patches in
   * the old journal's order. A failure (disk full) leaves everything as it was, and is logged; the
   * next try waits until the journal has grown by as much again.
   */
  private async compactOnline(): Promise<void> {
    const t0 = performance.now();
    const before = { bytes: this.journal.bytes, patches: this.owners.length };
    let file: JournalFile;
    try {
      file = this.journal.begin();
    } catch (e) {
      this.compactionFailed(e);
      return;
    }
    // A scratch gallery holds the new state through put/drop; it never touches the journal or lock.
    const capacity = Math.max(1024, Math.ceil(1.5 * (this.owners.length - this.removed)));
    const next = new Gallery(
      this.dir,
      this.dim,
      HnswIndex.create(this.dim, capacity),
      this.journal,
      this.lock,
      this.log,
    );
    for (const e of this.entries.values()) next.put(e, false, e.bytes);
    const start = [...next.entries.values()];
    const c: Compaction = { file, lines: [], next };
    this.compaction = c;
    // The first stretch began with the labelling.
    const slice = slicer(undefined, t0);
    try {
      const d = this.dim;
      for (const e of start) {
        c.file.write([this.addOp(e)]);
        // A patch at a time (an image's take tens of ms); not once a commit removed or replaced it.
        for (let p = 0; p < e.labels.length && next.entries.get(e.id) === e; p++) {
          next.index.add(e.patches.subarray(p * d, (p + 1) * d), [e.labels[p]]);
          await slice();
          // The gallery closed meanwhile.
          if (this.compaction !== c) return;
        }
      }
      // Synced in the thread pool, so that the switch syncs little; a few rounds, as commits may
      // keep arriving during each.
      for (let round = 0; round < 3; round++) {
        for (const l of c.lines.splice(0)) c.file.write(l);
        await c.file.sync();
        if (this.compaction !== c) return;
      }
      // From here to the end nothing yields, so no commit comes in between.
      const switchStart = performance.now();
      for (const l of c.lines.splice(0)) c.file.write(l);
      if (existsSync(join(this.dir, INDEX_META))) {
        rmSync(join(this.dir, INDEX_META));
        syncDir(this.dir);
      }
      this.journal.install(c.file);
      this.entries = next.entries;
      this.owners = next.owners;
      this.index = next.index;
      this.removed = next.removed;
      this.liveBytes = next.liveBytes;
      this.dirty = true;
      this.compaction = null;
      const end = performance.now();
      const longest = Math.max(slice.longest, end - switchStart);
      this.log(
        `gallery: compacted ${this.dir} online in ${(end - t0).toFixed(1)} ms (longest stretch without yielding ${longest.toFixed(1)} ms, the switch ${(end - switchStart).toFixed(1)} ms): journal ${before.bytes} → ${this.journal.bytes} bytes, index ${before.patches} → ${this.owners.length} patches`,
      );
    } catch (e) {
      if (this.compaction !== c) return;
      c.file.discard();
      this.compaction = null;
      this.compactionFailed(e);
    }
  }

  private compactionFailed(e: unknown): void {
    this.compactAfter = this.journal.bytes + Math.max(this.garbageBytes, this.liveBytes);
    this.log(
      `gallery: online compaction of ${this.dir} failed, the journal is as it was (${(e as Error).message}); next try at ${this.compactAfter} journal bytes`,
    );
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
   * from the index, then an exact rerank. Sliced and abort-checked as `search` is.
   */
  async nearestPatches(
    queries: Float32Array,
    count: number,
    k: number,
    o: { signal?: AbortSignal } = {},
  ): Promise<PatchHit[][]> {
    const next = slicer(o.signal);
    const d = this.dim;
    const out: PatchHit[][] = [];
    for (let t = 0; t < count; t++) {
      await next();
      // Read again after each yield: the gallery may have changed meanwhile.
      const live = this.owners.length - this.removed;
      const hits: PatchHit[] = [];
      if (live > 0) {
        const q = centred(queries.subarray(t * d, (t + 1) * d));
        const qSum = q.reduce((a, x) => a + x, 0);
        const labels = this.index.search(q, Math.min(live, nearestCandidates(k)), searchEf(this.index.stored));
        for (const l of labels) {
          const owner = this.owners[l];
          const e = owner && this.entries.get(owner[0]);
          if (!owner || !e) continue;
          const s = centredCosine(q, qSum, e.patches, owner[1] * d);
          hits.push({ id: e.id, patch: [Math.floor(owner[1] / e.cols), owner[1] % e.cols], similarity: s });
        }
      }
      out.push(hits.sort((a, b) => b.similarity - a.similarity).slice(0, k));
    }
    return out;
  }

  /**
   * Nearest gallery images for query patches [nq, D] at grid positions `positions` (row, col):
   * the index finds candidate images per query patch, then each candidate is scored exactly by
   * MaxSim. At most `candidates` images are scored, whatever the gallery's size: beyond that, those
   * whose MaxSim can be highest given what the index found (its best similarity per query patch,
   * and for a query patch that found none of its patches, the least similarity that patch found).
   * The index is synchronous, so the work is cut into slices of at most SLICE_MS that yield to the
   * event loop in between: a large search delays other requests by a slice, not by its length.
   * Once `signal` aborts, the search stops at its next slice, throwing the signal's reason.
   */
  async search(
    query: Float32Array,
    positions: [number, number][],
    pooled: Float32Array,
    k: number,
    withPooled: boolean,
    o: { signal?: AbortSignal; candidates?: number } = {},
  ): Promise<SearchHit[]> {
    const next = slicer(o.signal);
    await next();
    const d = this.dim;
    const q = normalize(query, d);
    const nq = positions.length;
    if (this.owners.length === this.removed) return [];
    /** Candidate id → how far its best found similarities rise above each query patch's least found one, summed. */
    const above = new Map<string, number>();
    for (let i = 0; i < nq; i++) {
      await next();
      const live = this.owners.length - this.removed;
      if (live === 0) continue;
      const qi = q.subarray(i * d, (i + 1) * d);
      const best = new Map<string, number>();
      let least = Number.POSITIVE_INFINITY;
      for (const l of this.index.search(qi, Math.min(live, searchCandidates(k)), searchEf(this.index.stored))) {
        const owner = this.owners[l];
        const e = owner && this.entries.get(owner[0]);
        if (!owner || !e) continue;
        let s = 0;
        for (let j = 0, at = owner[1] * d; j < d; j++) s += qi[j] * e.patches[at + j];
        least = Math.min(least, s);
        best.set(e.id, Math.max(s, best.get(e.id) ?? s));
        if (!above.has(e.id)) above.set(e.id, 0);
      }
      for (const [id, s] of best) above.set(id, above.get(id)! + s - least);
    }
    let candidates = [...above.keys()];
    if (candidates.length > (o.candidates ?? Number.POSITIVE_INFINITY))
      candidates = candidates.sort((a, b) => above.get(b)! - above.get(a)!).slice(0, o.candidates);
    const qp = normalize(pooled, d);
    const hits: SearchHit[] = [];
    for (const id of candidates) {
      await next();
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
    // A journal that refuses writes may not be the one on disk: the next open replays what is.
    if (this.journal.failed) return;
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
      // An online compaction in progress is given up (the old journal holds everything).
      this.compaction?.file.discard();
      this.compaction = null;
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

/** Call before each piece of a long computation; `longest` is the longest stretch it saw without yielding, in ms. */
interface Slicer {
  (): Promise<void>;
  longest: number;
}

/**
 * Yields to the event loop once SLICE_MS have passed since the last yield (or `start`), and throws
 * `signal`'s reason once it aborted (the client left).
 */
function slicer(signal?: AbortSignal, start = performance.now()): Slicer {
  let sliceStart = start;
  const next = (async () => {
    signal?.throwIfAborted();
    const now = performance.now();
    if (now - sliceStart <= SLICE_MS) return;
    next.longest = Math.max(next.longest, now - sliceStart);
    await new Promise((r) => setImmediate(r));
    signal?.throwIfAborted();
    sliceStart = performance.now();
  }) as Slicer;
  next.longest = 0;
  return next;
}
