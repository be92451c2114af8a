/**
 * The gallery's journal: each add or delete is one checksummed JSON line, fsynced before the
 * operation is acknowledged, so every acknowledged operation survives kill -9. A torn last line
 * (a write interrupted before its acknowledgement) is dropped with a warning; a bad line anywhere
 * else is corruption, and the journal refuses to open.
 */
import { createHash } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, truncateSync, writeSync } from 'node:fs';
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
    }
  | { op: 'delete'; id: string };

const lineHash = (payload: string) => createHash('sha256').update(payload).digest('hex').slice(0, 16);

export class Journal {
  private constructor(
    readonly path: string,
    private fd: number,
    /** Operations in the journal. */
    public records: number,
  ) {}

  /** Opens (or creates) the journal at `path` and returns its operations in order. */
  static open(path: string, log: (s: string) => void): { journal: Journal; ops: Op[] } {
    const ops = existsSync(path) ? replay(path, log) : [];
    return { journal: new Journal(path, openSync(path, 'a'), ops.length), ops };
  }

  append(op: Op): void {
    const payload = JSON.stringify(op);
    writeSync(this.fd, `${lineHash(payload)} ${payload}\n`);
    fsyncSync(this.fd);
    this.records++;
  }

  close(): void {
    closeSync(this.fd);
  }
}

function replay(path: string, log: (s: string) => void): Op[] {
  const text = readFileSync(path, 'utf8');
  const lines = text.split('\n');
  const complete = text.endsWith('\n') ? lines.slice(0, -1) : lines;
  let goodBytes = 0;
  const ops: Op[] = [];
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
      throw new GalleryError(
        `gallery journal ${path} is corrupt at record ${i + 1} (checksum mismatch); it will not be loaded`,
      );
    }
    goodBytes += Buffer.byteLength(line) + 1;
    ops.push(JSON.parse(payload));
  }
  return ops;
}
