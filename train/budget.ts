import { planByBudget, refitPlan, type Plan } from './schedule.ts';

/**
 * Fits a run's step count to a wall-clock budget, and keeps fitting it: the first steps pay
 * one-time costs (JIT, allocator arenas, page cache) and a shared machine's pace drifts, so a
 * count fixed once ends the cosine early or late. Pure of the clock: the loop reports the time.
 */
export class BudgetFit {
  /** Null until the first fit. */
  plan: Plan | null;
  private readonly timed: number[] = [];
  /** (step, elapsed) since the first fit, trimmed to the pace window. */
  private readonly history: { step: number; elapsed: number }[] = [];
  private lastFit: number;

  constructor(
    private readonly epochPlan: Plan,
    private readonly budgetSec: number,
    resumed: { plan: Plan | null; step: number; elapsedSec: number },
    private readonly o: {
      /** Steps not timed at the start (JIT, first allocations). */
      skipSteps: number;
      /** Steps whose median time fixes the first plan. */
      timingSteps: number;
      /** Re-fit after this fraction of the budget has passed since the last one. */
      refitEvery: number;
      /** The pace is measured over this fraction of the budget, so one slow step (a checkpoint) is averaged in, not extrapolated. */
      paceWindow: number;
    } = { skipSteps: 2, timingSteps: 4, refitEvery: 0.04, paceWindow: 0.1 },
  ) {
    this.plan = resumed.plan;
    this.history.push({ step: resumed.step, elapsed: resumed.elapsedSec });
    this.lastFit = resumed.elapsedSec;
  }

  /**
   * After an optimizer step: the steps done, how long the bare step took, and the run's elapsed
   * seconds (everything included). Returns a line for the log when the plan was made or changed
   * by more than 1%.
   */
  observe(step: number, stepSec: number, elapsedSec: number): string | null {
    const left = this.budgetSec - elapsedSec;
    if (!this.plan) {
      if (step > this.o.skipSteps) this.timed.push(stepSec);
      if (this.timed.length < this.o.timingSteps) return null;
      const perStep = [...this.timed].sort((a, b) => a - b)[Math.floor(this.timed.length / 2)];
      this.plan = planByBudget(this.epochPlan, left + step * perStep, perStep);
      this.history.splice(0, this.history.length, { step, elapsed: elapsedSec });
      this.lastFit = elapsedSec;
      return `time budget ${(this.budgetSec / 60).toFixed(4).replace(/\.?0+$/, '')} min at ${perStep.toFixed(2)} s/step → ${this.plan.totalSteps} steps (warmup ${this.plan.warmupSteps})`;
    }
    this.history.push({ step, elapsed: elapsedSec });
    const windowStart = elapsedSec - this.o.paceWindow * this.budgetSec;
    while (this.history.length > 2 && this.history[1].elapsed <= windowStart) this.history.shift();
    const from = this.history[0];
    // Re-fit on a cadence of budget time, and more often near the end, where one step is a
    // larger share of what is left.
    const due = elapsedSec - this.lastFit >= Math.min(this.o.refitEvery * this.budgetSec, Math.max(left / 4, 0));
    if (step - from.step < this.o.timingSteps || !due || step >= this.plan.totalSteps) return null;
    // The pace is the mean wall time per step over the recent window, diagnostics and
    // checkpoints included: the median bare step undercounts a run's pace by ~15%.
    const perStep = (elapsedSec - from.elapsed) / (step - from.step);
    this.lastFit = elapsedSec;
    const total = step + Math.max(0, Math.floor(left / perStep));
    const next = refitPlan(this.plan, step, total, this.epochPlan.totalSteps);
    if (next.totalSteps === this.plan.totalSteps) return null;
    const was = this.plan.totalSteps;
    this.plan = next;
    if (Math.abs(next.totalSteps - was) < 0.01 * was) return null;
    return `re-fitted at step ${step}: ${perStep.toFixed(2)} s/step → ${next.totalSteps} steps (was ${was})`;
  }
}
