/**
 * Schedules as pure functions of the optimizer step (not the micro-batch), so gradient
 * accumulation and resume cannot shift them.
 */

export interface ScheduleConfig {
  /** Optimizer steps in the whole run. */
  totalSteps: number;
  warmupSteps: number;
  startLr: number;
  peakLr: number;
  finalLr: number;
  weightDecay: [number, number];
  emaMomentum: [number, number];
}

export interface ScheduleValues {
  lr: number;
  weightDecay: number;
  momentum: number;
}

/** Optimizer steps per epoch: micro-batches that fill a whole accumulation group. */
export function stepsPerEpoch(batchesPerEpoch: number, accum: number): number {
  return Math.floor(batchesPerEpoch / accum);
}

/** Linear warmup from startLr to peakLr, then half-cosine to finalLr. */
export function learningRate(step: number, c: ScheduleConfig): number {
  if (step < c.warmupSteps) return c.startLr + (c.peakLr - c.startLr) * (step / c.warmupSteps);
  const span = Math.max(1, c.totalSteps - c.warmupSteps);
  const progress = Math.min(1, (step - c.warmupSteps) / span);
  return c.finalLr + (c.peakLr - c.finalLr) * 0.5 * (1 + Math.cos(Math.PI * progress));
}

/** Cosine ramp from weightDecay[0] up to weightDecay[1] over the run. */
export function weightDecay(step: number, c: ScheduleConfig): number {
  const [start, end] = c.weightDecay;
  const progress = Math.min(1, step / Math.max(1, c.totalSteps));
  return end + (start - end) * 0.5 * (1 + Math.cos(Math.PI * progress));
}

/** Linear ramp of the EMA momentum, reaching emaMomentum[1] at the last step. */
export function emaMomentum(step: number, c: ScheduleConfig): number {
  const [start, end] = c.emaMomentum;
  return start + (end - start) * Math.min(1, step / Math.max(1, c.totalSteps));
}

export function scheduleAt(step: number, c: ScheduleConfig): ScheduleValues {
  return { lr: learningRate(step, c), weightDecay: weightDecay(step, c), momentum: emaMomentum(step, c) };
}

export interface Plan {
  totalSteps: number;
  warmupSteps: number;
  stepsPerEpoch: number;
}

/** Optimizer steps for a run of `epochs` (fractional allowed), warmup given in epochs as in the reference. */
export function planByEpochs(
  batchesPerEpoch: number,
  accum: number,
  epochs: number,
  warmupEpochs: number,
  maxSteps?: number,
): Plan {
  const spe = stepsPerEpoch(batchesPerEpoch, accum);
  if (spe < 1)
    throw new RangeError(`an epoch of ${batchesPerEpoch} batches holds no optimizer step at --accum ${accum}`);
  let totalSteps = Math.round(spe * epochs);
  let warmupSteps = Math.round(spe * warmupEpochs);
  if (maxSteps !== undefined && maxSteps < totalSteps) {
    // A shortened run keeps the recipe's shape: warmup stays the same fraction of the run.
    warmupSteps = Math.round((warmupSteps * maxSteps) / totalSteps);
    totalSteps = maxSteps;
  }
  return { totalSteps, warmupSteps: Math.min(warmupSteps, totalSteps), stepsPerEpoch: spe };
}

/** A whole schedule that fits a wall-clock budget, given a measured time per optimizer step. */
export function planByBudget(epochPlan: Plan, budgetSec: number, secPerStep: number): Plan {
  const fit = Math.max(1, Math.floor(budgetSec / secPerStep));
  if (fit >= epochPlan.totalSteps) return epochPlan;
  return {
    ...epochPlan,
    totalSteps: fit,
    warmupSteps: Math.round((epochPlan.warmupSteps * fit) / epochPlan.totalSteps),
  };
}
