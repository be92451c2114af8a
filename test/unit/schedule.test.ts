import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  emaMomentum,
  learningRate,
  planByBudget,
  planByEpochs,
  scheduleAt,
  weightDecay,
} from '../../train/schedule.ts';

const base = {
  startLr: 2e-4,
  peakLr: 1e-3,
  finalLr: 1e-6,
  weightDecay: [0.04, 0.4] as [number, number],
  emaMomentum: [0.996, 1.0] as [number, number],
};

test('the reference experiment with accumulation: schedules count optimizer steps, not batches', () => {
  // 1562 batches per epoch, --accum 4, 50 epochs, 15 warmup epochs.
  const plan = planByEpochs(1562, 4, 50, 15);
  assert.equal(plan.stepsPerEpoch, 390);
  assert.equal(plan.totalSteps, 19_500);
  assert.equal(plan.warmupSteps, 5_850);
  const c = { ...base, ...plan };
  assert.equal(learningRate(5_850, c), 1e-3, 'peak LR is reached at the end of warmup');
  assert.ok(learningRate(5_849, c) < 1e-3);
  assert.ok(Math.abs(learningRate(19_500, c) - 1e-6) < 1e-12, 'final LR at the last optimizer step');
  // Stepping per batch would have ended warmup 4x too early: at step 5850/4 we are still warming up.
  assert.ok(learningRate(1_462, c) < 0.5 * 1e-3);
});

test('warmup is linear, then cosine decays monotonically', () => {
  const c = { ...base, totalSteps: 100, warmupSteps: 10 };
  assert.equal(learningRate(0, c), 2e-4);
  assert.ok(Math.abs(learningRate(5, c) - 6e-4) < 1e-12);
  for (let s = 11; s <= 100; s++) assert.ok(learningRate(s, c) <= learningRate(s - 1, c));
});

test('weight decay ramps 0.04 → 0.4 by cosine; EMA momentum 0.996 → 1', () => {
  const c = { ...base, totalSteps: 1000, warmupSteps: 0 };
  assert.ok(Math.abs(weightDecay(0, c) - 0.04) < 1e-12);
  assert.ok(Math.abs(weightDecay(1000, c) - 0.4) < 1e-12);
  assert.ok(Math.abs(weightDecay(500, c) - 0.22) < 1e-12);
  assert.equal(emaMomentum(0, c), 0.996);
  assert.equal(emaMomentum(1000, c), 1);
  assert.deepEqual(scheduleAt(10, c), {
    lr: learningRate(10, c),
    weightDecay: weightDecay(10, c),
    momentum: emaMomentum(10, c),
  });
});

test('shortened and budget-fitted runs keep the warmup fraction', () => {
  const p = planByEpochs(100, 1, 10, 3, 50);
  assert.deepEqual(p, { totalSteps: 50, warmupSteps: 15, stepsPerEpoch: 100 });
  const b = planByBudget(planByEpochs(100, 1, 10, 3), 600, 2);
  assert.equal(b.totalSteps, 300);
  assert.equal(b.warmupSteps, 90);
  assert.throws(() => planByEpochs(3, 4, 1, 0), /no optimizer step/);
});
