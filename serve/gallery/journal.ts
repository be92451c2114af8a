/**
 * The gallery's journal, its source of truth. Each write is one line — a checksum and a JSON list
 * of operations (one request's adds and deletes) — fsynced before it is acknowledged, so every
 * acknowledged write survives kill -9, and a write is all or nothing: a line that did not reach
 * the disk whole is cut off again (or, after a crash, dropped on open, never having been
 * acknowledged). A bad line anywhere but at the end is corruption, and the journal refuses to open.
 */
import { createHash } from 'node:crypto';
import {
  closeSync,
  existsSync,
  fsyncSync,
  ftruncateSync,
  openSync,
  readFileSync,
  rmSync,
  truncateSync,
  writeSync,
} from 'node:fs';
import { moveInto, writeSynced } from '../../format/atomic.ts';
import { GalleryError } from './errors.ts';

export type Op =
  | {
      op: 'add';
      id: string;
      metadata?: Record<string, unknown>;
      rows: number;
      cols: number;
      /** base64 of float32 [rows·cols, D], unit rows */
      patches: string;
      /** base64 of float32 [D], unit length */
      pooled: string;
      addedAt: string;
      /** base64 PNG of the model's input, for display (adds since it was recorded) */
      image?: string;
    }
  | { op: 'delete'; id: string };

const lineHash = (payload: string) => createHash('sha256').update(payload).digest('hex').slice(0, 16);

/** A journal line: one operation (the first format) or a list of them. */
const opsOf = (record: Op | { ops: Op[] }): Op[] => ('ops' in record ? record.ops : [record]);

function line(ops: Op[]): Buffer {
  const payload = JSON.stringify({ ops });
  return Buffer.from(`${lineHash(payload)} ${payload}\n`);
}

/** The lines of `records`, one at a time (a compaction need not hold them all). */
function* lines(records: Op[][]): Generator<Buffer> {
  for (const ops of records) yield line(ops);
}

export class Journal {
  /** Set when a failed write could not be cut off again: nothing more is written until a reopen drops it. */
  private broken = false;

  private constructor(
    readonly path: string,
    private fd: number,
    /** Bytes of whole lines: where the next write starts. */
    private size: number,
    /** Lines in the journal. */
    public records: number,
  ) {}

  /** Opens (or creates) the journal at `path`; returns its records in order, each a list of operations. */
  static open(path: string, log: (s: string) => void): { journal: Journal; records: Op[][] } {
    const { records, size } = existsSync(path) ? replay(path, log) : { records: [], size: 0 };
    return { journal: new Journal(path, openSync(path, 'a'), size, records.length), records };
  }

  /**
   * Writes `ops` as one line and syncs it. A record that cannot be serialised is a
   * GalleryError('invalid') before anything is written; on a failed write (disk full, a file-size
   * limit, I/O) the line is cut off again and the error is a GalleryError('storage'): the journal is
   * as before.
   */
  append(ops: Op[]): void {
    if (this.broken)
      throw new GalleryError(
        'storage',
        `gallery journal ${this.path}: an earlier failed write could not be undone; restart to recover`,
      );
    let buf: Buffer;
    try {
      buf = line(ops);
    } catch (e) {
      // Serialised before a byte is written: a record JSON cannot hold (metadata nested too deep) changes nothing.
      throw new GalleryError('invalid', `gallery: cannot store this request (${(e as Error).message})`);
    }
    try {
      // writeSync may write less than asked (a disk filling up): loop until all is written, or it throws.
      for (let off = 0; off < buf.length; ) off += writeSync(this.fd, buf, off, buf.length - off);
      fsyncSync(this.fd);
    } catch (e) {
      try {
        ftruncateSync(this.fd, this.size);
        fsyncSync(this.fd);
      } catch {
        this.broken = true;
      }
      throw new GalleryError(
        'storage',
        `gallery journal ${this.path}: write failed, nothing stored (${(e as Error).message})`,
      );
    }
    this.size += buf.length;
    this.records++;
  }

  /**
   * Replaces the journal by `ops` (compaction): written beside it, synced, then renamed over it,
   * so a crash leaves the old journal or the new one.
   */
  rewrite(ops: Op[][]): void {
    const tmp = `${this.path}.compact`;
    let size: number;
    try {
      size = writeSynced(tmp, lines(ops));
    } catch (e) {
      throw new GalleryError(
        'storage',
        `gallery journal ${this.path}: compaction failed, journal unchanged (${(e as Error).message})`,
      );
    }
    moveInto(tmp, this.path);
    closeSync(this.fd);
    this.fd = openSync(this.path, 'a');
    this.size = size;
    this.records = ops.length;
  }

  get bytes(): number {
    return this.size;
  }

  close(): void {
    closeSync(this.fd);
  }
}

function replay(path: string, log: (s: string) => void): { records: Op[][]; size: number } {
  rmSync(`${path}.compact`, { force: true });
  const text = readFileSync(path, 'utf8');
  if (text.length === 0) return { records: [], size: 0 };
  const lines = text.split('\n');
  const complete = text.endsWith('\n') ? lines.slice(0, -1) : lines;
  let goodBytes = 0;
  const records: Op[][] = [];
  for (let i = 0; i < complete.length; i++) {
    const l = complete[i];
    const sp = l.indexOf(' ');
    const payload = l.slice(sp + 1);
    const last = i === complete.length - 1;
    const ok = sp === 16 && l.slice(0, 16) === lineHash(payload) && (!last || text.endsWith('\n'));
    if (!ok) {
      if (last) {
        // An interrupted write: it was never acknowledged. Drop it.
        log(`gallery: dropping an incomplete last journal record (${l.length} bytes) in ${path}`);
        truncateSync(path, goodBytes);
        break;
      }
      throw new GalleryError(
        'corrupt',
        `gallery journal ${path} is corrupt at record ${i + 1} (checksum mismatch); it will not be loaded`,
      );
    }
    goodBytes += Buffer.byteLength(l) + 1;
    records.push(opsOf(JSON.parse(payload)));
  }
  return { records, size: goodBytes };
}
