/** The decode gate: the pixels being decoded at once never pass its capacity, and nobody starves. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Gate } from '../../runtime/gate.ts';

const tick = () => new Promise((r) => setTimeout(r, 2));

test('concurrent weight never exceeds the capacity; an oversized task runs alone', async () => {
  const gate = new Gate(10);
  let peak = 0;
  const order: number[] = [];
  const job = (i: number, w: number) =>
    gate.run(w, async () => {
      peak = Math.max(peak, gate.inUse);
      order.push(i);
      await tick();
      return i;
    });
  const done = await Promise.all([job(0, 6), job(1, 6), job(2, 3), job(3, 50), job(4, 1)]);
  assert.deepEqual(done, [0, 1, 2, 3, 4]);
  assert.ok(peak <= 10, `peak ${peak}`);
  // First come, first served: the small job 2 does not overtake job 1 that waits for room.
  assert.deepEqual(order, [0, 1, 2, 3, 4]);
  assert.equal(gate.inUse, 0);
});

test('a failing task releases its weight', async () => {
  const gate = new Gate(4);
  await assert.rejects(
    gate.run(4, async () => {
      throw new Error('bad image');
    }),
    /bad image/,
  );
  assert.equal(gate.inUse, 0);
  assert.equal(await gate.run(4, async () => 'ok'), 'ok');
});

test('owners are served in turn, one task each, and at most `slots` tasks run at once', async () => {
  const gate = new Gate(1000, Number.POSITIVE_INFINITY, undefined, 2);
  const big = {};
  const small = {};
  const order: string[] = [];
  let running = 0;
  let peak = 0;
  const job = (name: string, owner: object) =>
    gate.run(
      1,
      async () => {
        peak = Math.max(peak, ++running);
        order.push(name);
        await tick();
        running--;
      },
      undefined,
      owner,
    );
  const many = Array.from({ length: 8 }, (_, i) => job(`big${i}`, big));
  await Promise.resolve();
  await Promise.all([...many, job('small', small)]);
  assert.equal(peak, 2);
  // The two running when it came, then one more of the big owner's (its turn), then it.
  assert.ok(order.indexOf('small') <= 3, order.join(' '));
});

test('a waiter whose client left never runs, and an owner with nothing waiting is not refused as busy', async () => {
  const gate = new Gate(1, 1, undefined, 1);
  const hog = {};
  let ran = 0;
  let release = () => {};
  const first = gate.run(1, () => new Promise<void>((go) => (release = go)), undefined, hog);
  const ac = new AbortController();
  const queued = gate.run(1, async () => void ran++, ac.signal, hog);
  await assert.rejects(
    gate.run(1, async () => void ran++, undefined, hog),
    (e: Error & { code?: string }) => e.code === 'busy',
  );
  const other = gate.run(1, async () => void ran++, undefined, {});
  ac.abort();
  await assert.rejects(queued, (e: Error & { code?: string }) => e.code === 'cancelled');
  await assert.rejects(
    gate.run(1, async () => void ran++, ac.signal, hog),
    (e: Error & { code?: string }) => e.code === 'cancelled',
  );
  release();
  await Promise.all([first, other]);
  assert.equal(ran, 1);
  assert.equal(gate.waitingPixels, 0);
});
