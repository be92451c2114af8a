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
