/**
 * Checkpoints: one file, written to a temporary name, fsynced and renamed over the old one
 * (format/atomic.ts), so a kill -9 at any moment leaves either the previous checkpoint or the new
 * one, never a torn file.
 * Layout: magic, header length (u32 LE), JSON header, zero padding to 4 bytes, then the float32
 * arrays named in the header, in order.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { writeAtomic } from '../format/atomic.ts';

const MAGIC = Buffer.from('IJEPACK1');

export interface CheckpointHeader {
  version: 1;
  /** Arbitrary JSON-able metadata (step, position, plan, config, …). */
  meta: Record<string, unknown>;
  arrays: { name: string; length: number }[];
  /** SHA-256 of the array bytes, to detect corruption. */
  sha256: string;
}

export interface Checkpoint {
  meta: Record<string, unknown>;
  arrays: Map<string, Float32Array>;
}

function bytesOf(a: Float32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

export function writeCheckpoint(path: string, meta: Record<string, unknown>, arrays: [string, Float32Array][]): void {
  const hash = createHash('sha256');
  for (const [, a] of arrays) hash.update(bytesOf(a));
  const header: CheckpointHeader = {
    version: 1,
    meta,
    arrays: arrays.map(([name, a]) => ({ name, length: a.length })),
    sha256: hash.digest('hex'),
  };
  const json = Buffer.from(JSON.stringify(header));
  const pad = (4 - ((MAGIC.length + 4 + json.length) % 4)) % 4;
  const len = Buffer.alloc(4);
  len.writeUInt32LE(json.length + pad);
  writeAtomic(path, [MAGIC, len, json, Buffer.alloc(pad, 0x20), ...arrays.map(([, a]) => bytesOf(a))]);
}

export function readCheckpoint(path: string): Checkpoint {
  if (!existsSync(path)) throw new Error(`no checkpoint at ${path}`);
  const buf = readFileSync(path);
  if (buf.length < 12 || !buf.subarray(0, 8).equals(MAGIC))
    throw new Error(`${path} is not an ijepa checkpoint (bad magic)`);
  const hlen = buf.readUInt32LE(8);
  let header: CheckpointHeader;
  try {
    header = JSON.parse(buf.subarray(12, 12 + hlen).toString('utf8'));
  } catch {
    throw new Error(`${path}: corrupt checkpoint header`);
  }
  let off = 12 + hlen;
  const total = header.arrays.reduce((n, a) => n + a.length * 4, 0);
  if (buf.length !== off + total)
    throw new Error(`${path}: truncated or oversized checkpoint (${buf.length} bytes, expected ${off + total})`);
  const digest = createHash('sha256').update(buf.subarray(off)).digest('hex');
  if (digest !== header.sha256) throw new Error(`${path}: checkpoint checksum mismatch (corrupt file)`);
  const arrays = new Map<string, Float32Array>();
  for (const a of header.arrays) {
    // Copy out so the arrays are aligned and independent of the file buffer.
    arrays.set(a.name, new Float32Array(buf.buffer.slice(buf.byteOffset + off, buf.byteOffset + off + a.length * 4)));
    off += a.length * 4;
  }
  return { meta: header.meta, arrays };
}
