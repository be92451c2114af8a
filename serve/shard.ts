/**
 * Shares of a folder for `ijepa index` run by several processes at once: share i of n holds the
 * images whose id hashes to i modulo n. The hash is of the id alone (the path relative to the
 * folder), so an image lands in the same share whatever order a directory lists in, on any
 * machine, and the n shares are disjoint and cover the folder.
 */
import { createHash } from 'node:crypto';

export interface Shard {
  /** This process's share, 0 ≤ index < count. */
  index: number;
  count: number;
}

/** `i/n` (say, `0/3`) as a share; throws a message naming `flag` when it is not one. */
export function parseShard(text: string, flag = '--shard'): Shard {
  const m = /^(\d+)\/(\d+)$/.exec(text.trim());
  const index = m ? Number(m[1]) : Number.NaN;
  const count = m ? Number(m[2]) : Number.NaN;
  if (!m || !Number.isSafeInteger(count) || count < 1 || index >= count)
    throw new Error(`${flag} must be i/n with 0 ≤ i < n (say, 0/3 for the first of three), got '${text}'`);
  return { index, count };
}

/** The share `id` belongs to among `count`: the first 48 bits of its SHA-256, modulo count. */
export function shareOf(id: string, count: number): number {
  return createHash('sha256').update(id, 'utf8').digest().readUIntBE(0, 6) % count;
}

export function inShard(id: string, shard: Shard): boolean {
  return shareOf(id, shard.count) === shard.index;
}
