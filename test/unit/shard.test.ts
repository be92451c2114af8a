/** Shares of a folder for parallel `ijepa index`: stable, disjoint, covering, about even. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Rng } from '../../model/rng.ts';
import { inShard, parseShard, shareOf } from '../../serve/shard.ts';

const ids = Array.from({ length: 3000 }, (_, i) => `class-${i % 7}/img_${i}.png`);

test('the shares of n are disjoint, cover every id and are about even; the split ignores listing order', () => {
  for (const count of [1, 2, 3, 8]) {
    const shards = Array.from({ length: count }, (_, index) => ({ index, count }));
    const taken = shards.map((s) => ids.filter((id) => inShard(id, s)));
    assert.equal(
      taken.reduce((n, t) => n + t.length, 0),
      ids.length,
      'each id in exactly one share',
    );
    assert.deepEqual(new Set(taken.flat()), new Set(ids));
    for (const t of taken)
      assert.ok(Math.abs(t.length - ids.length / count) < 0.1 * (ids.length / count), `${t.length}`);
    const rng = Rng.for(3, 'shard-order');
    const shuffled = [...ids];
    for (let i = shuffled.length - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [shuffled[i], shuffled[j]] = [shuffled[j], shuffled[i]];
    }
    shards.forEach((s, k) => assert.deepEqual(new Set(shuffled.filter((id) => inShard(id, s))), new Set(taken[k])));
  }
});

test('an id’s share depends on the id alone, the same in every process and version (a resumed run on another machine agrees)', () => {
  // Pinned: changing the hash would move images between the shares of a run already under way.
  // SHA-256('abc') begins ba7816bf8f01 (FIPS 180-2's test vector); a share is those 48 bits mod n.
  for (const n of [1, 2, 3, 7, 1000, 65_537]) assert.equal(shareOf('abc', n), Number(0xba7816bf8f01n % BigInt(n)));
  assert.equal(shareOf('sub/b.jpg', 1000), 493);
  assert.equal(shareOf('é/c.webp', 1000), 656, 'ids hash as UTF-8');
});

test('--shard i/n is parsed, and anything else refused saying what is wanted', () => {
  assert.deepEqual(parseShard('0/3'), { index: 0, count: 3 });
  assert.deepEqual(parseShard('2/3'), { index: 2, count: 3 });
  for (const bad of ['3/3', '1/0', '-1/3', 'a/b', '1', '1/2/3', ''])
    assert.throws(() => parseShard(bad), /--shard must be i\/n with 0 ≤ i < n/, bad);
});
