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
  fsync,
  fsyncSync,
  ftruncateSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  truncateSync,
  writeSync,
} from 'node:fs';
import { dirname } from 'node:path';
import { syncDir } from '../../format/atomic.ts';
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

/** Writes all of `buf` at the end of `fd` (writeSync may write less than asked: a disk filling up). */
function writeAll(fd: number, buf: Uint8Array): void {
  for (let off = 0; off < buf.length; ) off += writeSync(fd, buf, off, buf.length - off);
}

/**
 * A whole journal being written beside the live one (a compaction, a re-embedding): nothing reads
 * it until it is synced and renamed over the journal, so a crash before that leaves the old one.
 */
export class JournalFile {
  bytes = 0;
  records = 0;
  /** Bytes written that no sync has covered yet. */
  private unsynced = 0;
  private fd: number | null;

  constructor(readonly path: string) {
    this.fd = openSync(path, 'w');
  }

  /** Appends one record: its operations, or a line as `Journal.append` returned it. */
  write(record: Op[] | Buffer): void {
    if (this.fd === null) throw new Error(`${this.path} is closed`);
    const buf = Buffer.isBuffer(record) ? record : line(record);
    writeAll(this.fd, buf);
    this.bytes += buf.length;
    this.unsynced += buf.length;
    this.records++;
  }

  /** Syncs what is written so far in the thread pool: the event loop goes on meanwhile. */
  sync(): Promise<void> {
    const fd = this.fd;
    if (fd === null) return Promise.reject(new Error(`${this.path} is closed`));
    const covered = this.unsynced;
    return new Promise((resolve, reject) =>
      fsync(fd, (e) => {
        if (e) return reject(e);
        this.unsynced -= covered;
        resolve();
      }),
    );
  }

  /** Syncs and closes it: ready to be renamed into place. */
  finish(): void {
    if (this.fd === null) throw new Error(`${this.path} is closed`);
    if (this.unsynced > 0) fsyncSync(this.fd);
    closeSync(this.fd);
    this.fd = null;
  }

  /** Closes and removes it (a compaction given up); a no-op once done. */
  discard(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
    rmSync(this.path, { force: true });
  }
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
   * as before. Returns the line written.
   */
  append(ops: Op[]): Buffer {
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
      writeAll(this.fd, buf);
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
    return buf;
  }

  /** A replacement journal to write (compaction), at the name an open clears away. */
  begin(): JournalFile {
    return new JournalFile(`${this.path}.compact`);
  }

  /**
   * Makes `f` the journal: synced, renamed over it, the directory synced. Throws before the rename
   * with the journal unchanged; a failure after it (the new file is the journal, but the rename may
   * not be durable) stops all writes until a reopen.
   */
  install(f: JournalFile): void {
    f.finish();
    renameSync(f.path, this.path);
    this.broken = true;
    const fd = openSync(this.path, 'a');
    closeSync(this.fd);
    this.fd = fd;
    this.size = f.bytes;
    this.records = f.records;
    syncDir(dirname(this.path));
    this.broken = false;
  }

  /**
   * Replaces the journal by `records` (compaction on open): written beside it, synced, then renamed
   * over it, so a crash leaves the old journal or the new one.
   */
  rewrite(records: Op[][]): void {
    const f = this.begin();
    try {
      for (const ops of records) f.write(ops);
      this.install(f);
    } catch (e) {
      if (this.broken) throw e;
      f.discard();
      throw new GalleryError(
        'storage',
        `gallery journal ${this.path}: compaction failed, journal unchanged (${(e as Error).message})`,
      );
    }
  }

  get bytes(): number {
    return this.size;
  }

  /** Whether writes are refused until a reopen (see `append`, `install`). */
  get failed(): boolean {
    return this.broken;
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
