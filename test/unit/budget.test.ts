import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BudgetFit } from '../../train/budget.ts';
import { learningRate, planByEpochs, scheduleAt, type Plan } from '../../train/schedule.ts';
import { Rng } from '../../model/rng.ts';

const optim = {
  startLr: 2e-4,
  peakLr: 1e-3,
  finalLr: 1e-6,
  weightDecay: [0.04, 0.4] as [number, number],
  emaMomentum: [0.996, 1.0] as [number, number],
};

/** A budget run as the loop drives it, on a simulated clock: `pace(step)` is one step's seconds. */
function simulate(budgetSec: number, pace: (step: number) => number, resumeAt?: number) {
  const epochPlan = planByEpochs(100_000, 1, 100, 10);
  let fit = new BudgetFit(epochPlan, budgetSec, { plan: null, step: 0, elapsedSec: 0 });
  let plan: Plan | null = null;
  let step = 0;
  let elapsed = 0;
  const lrs: number[] = [];
  for (;;) {
    if (plan && step >= plan.totalSteps) break;
    if (elapsed >= budgetSec) break;
    if (step === resumeAt) {
      // A resumed run starts a new fitter from the checkpointed plan and clock.
      fit = new BudgetFit(epochPlan, budgetSec, { plan, step, elapsedSec: elapsed });
    }
    lrs.push(learningRate(step, { ...optim, ...(plan ?? epochPlan) }));
    const dt = pace(step);
    elapsed += dt;
    step++;
    fit.observe(step, dt, elapsed);
    plan = fit.plan;
  }
  return { used: elapsed / budgetSec, plan: plan!, steps: step, lrs };
}

/** The largest LR change between consecutive cosine steps, in units of the cosine's steepest slope. */
function worstJump(lrs: number[], plan: Plan): number {
  const slope = ((optim.peakLr - optim.finalLr) * Math.PI) / 2 / (plan.totalSteps - plan.warmupSteps);
  let worst = 0;
  for (let s = plan.warmupSteps + 1; s < lrs.length; s++)
    worst = Math.max(worst, Math.abs(lrs[s] - lrs[s - 1]) / slope);
  return worst;
}

const budget = 1500;
const noise = (seed: string) => {
  const rng = Rng.for(7, seed);
  return () => 0.8 + 0.4 * rng.next();
};
const jitter = noise('jitter');
const scenarios: [string, (s: number) => number][] = [
  ['steady', () => 1],
  // One-time costs: the first 30 steps are 3x slower than the rest (the old single fit ended at 81%).
  ['slow start', (s) => (s < 30 ? 3 : 1)],
  ['speeds up halfway', (s) => (s < 700 ? 1.2 : 0.6)],
  // A busy shared core: past the first fit, steps take twice as long (a fixed count would overrun).
  ['slows down halfway', (s) => (s < 500 ? 1 : 2)],
  ['noisy', () => jitter()],
  ['checkpoint every 100 steps', (s) => (s % 100 === 99 ? 20 : 1)],
];

for (const [name, pace] of scenarios) {
  test(`a time budget is used to within 3% and the cosine ends with it: ${name}`, () => {
    const r = simulate(budget, pace);
    assert.ok(r.used >= 0.97 && r.used <= 1.0, `used ${(100 * r.used).toFixed(1)}% of the budget`);
    assert.equal(r.steps, r.plan.totalSteps, 'stopped by its plan, not cut off by the clock');
    // The last step runs at the end of the cosine, where the LR is (nearly) the final one.
    const last = scheduleAt(r.steps - 1, { ...optim, ...r.plan });
    assert.ok(last.lr < 1e-3 * optim.peakLr + optim.finalLr, `last LR ${last.lr}`);
    assert.ok(last.momentum > 0.9999, `last EMA momentum ${last.momentum}`);
    // Re-fits bend the cosine, they do not jump it.
    assert.ok(worstJump(r.lrs, r.plan) < 3, `LR jump ${worstJump(r.lrs, r.plan).toFixed(2)}× the cosine's slope`);
    for (let s = r.plan.warmupSteps + 1; s < r.lrs.length; s++) assert.ok(r.lrs[s] <= r.lrs[s - 1] + 1e-15);
  });
}

test('a resumed budget run keeps fitting from its checkpointed plan', () => {
  const r = simulate(budget, (s) => (s < 600 ? 1 : 1.5), 400);
  assert.ok(r.used >= 0.97 && r.used <= 1.0, `used ${(100 * r.used).toFixed(1)}%`);
  assert.equal(r.steps, r.plan.totalSteps);
});

test('a budget longer than the epochs ends with the epochs', () => {
  const epochPlan = planByEpochs(10, 1, 5, 1);
  const fit = new BudgetFit(epochPlan, 1e6, { plan: null, step: 0, elapsedSec: 0 });
  let elapsed = 0;
  for (let step = 1; step <= 40; step++) fit.observe(step, 1, (elapsed += 1));
  assert.equal(fit.plan?.totalSteps, 50);
});
