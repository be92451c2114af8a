/**
 * Files replaced whole (checkpoints, the gallery's journal, index snapshot and metadata): written
 * under a temporary name beside the final one, synced, renamed into place, and the directory
 * synced, so that a crash at any moment leaves the old file or the new one, never a torn one.
 */
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

/** Syncs a directory, so that a rename or unlink in it is durable. */
export function syncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Syncs a file that something else wrote (a native library's own stream). */
export function syncFile(path: string): void {
  const fd = openSync(path, 'r+');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Writes `parts` in order to `tmp` (created or truncated) and syncs it; returns the bytes written.
 * On failure `tmp` is removed and the error rethrown.
 */
export function writeSynced(tmp: string, parts: Iterable<Uint8Array>): number {
  const fd = openSync(tmp, 'w');
  let size = 0;
  try {
    for (const part of parts) {
      for (let off = 0; off < part.length; ) off += writeSync(fd, part, off, part.length - off);
      size += part.length;
    }
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw e;
  }
  closeSync(fd);
  return size;
}

/** Renames a synced file over `path` and syncs the directory, so that the rename is durable. */
export function moveInto(tmp: string, path: string): void {
  renameSync(tmp, path);
  syncDir(dirname(path));
}

/**
 * Replaces `path` by `parts` (text is written as UTF-8) through `tmp`, `path`.tmp unless given:
 * when this returns the new file is durable; when it throws `tmp` is gone.
 */
export function writeAtomic(path: string, parts: Iterable<Uint8Array> | string, tmp = `${path}.tmp`): void {
  writeSynced(tmp, typeof parts === 'string' ? [Buffer.from(parts)] : parts);
  try {
    moveInto(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}
