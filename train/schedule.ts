/**
 * Schedules as pure functions of the optimizer step (not the micro-batch), so gradient
 * accumulation and resume cannot shift them.
 */

export interface ScheduleConfig {
  /** Optimizer steps in the whole run. */
  totalSteps: number;
  warmupSteps: number;
  /** Where a re-fitted plan took over and how far the run's schedules had got there (see `Plan`). */
  from?: Anchor;
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

/**
 * A re-fit changes the step count mid-run. Rescaling the whole schedule would jump the LR, so
 * progress continues linearly from where it had got at the re-fit to 1 at the new last step.
 */
export interface Anchor {
  step: number;
  /** Fraction of the run done (the weight-decay and EMA ramps). */
  run: number;
  /** Fraction of the cosine done (0 while warming up). */
  cosine: number;
}

/** What progress depends on: the step counts and, after a re-fit, its anchor. */
type Span = Pick<ScheduleConfig, 'totalSteps' | 'warmupSteps' | 'from'>;

function continueFrom(fromStep: number, fromProgress: number, step: number, totalSteps: number): number {
  const span = Math.max(1, totalSteps - fromStep);
  return Math.min(1, fromProgress + ((1 - fromProgress) * (step - fromStep)) / span);
}

/** Fraction of the run done at `step`: drives the weight-decay and EMA ramps. */
export function runProgress(step: number, c: Span): number {
  if (c.from) return continueFrom(c.from.step, c.from.run, step, c.totalSteps);
  return Math.min(1, step / Math.max(1, c.totalSteps));
}

/** Fraction of the post-warmup cosine done at `step`. */
export function cosineProgress(step: number, c: Span): number {
  if (step < c.warmupSteps) return 0;
  if (c.from && c.from.step >= c.warmupSteps) return continueFrom(c.from.step, c.from.cosine, step, c.totalSteps);
  return continueFrom(c.warmupSteps, 0, step, c.totalSteps);
}

/** Linear warmup from startLr to peakLr, then half-cosine to finalLr. */
export function learningRate(step: number, c: ScheduleConfig): number {
  if (step < c.warmupSteps) return c.startLr + (c.peakLr - c.startLr) * (step / c.warmupSteps);
  return c.finalLr + (c.peakLr - c.finalLr) * 0.5 * (1 + Math.cos(Math.PI * cosineProgress(step, c)));
}

/** Cosine ramp from weightDecay[0] up to weightDecay[1] over the run. */
export function weightDecay(step: number, c: ScheduleConfig): number {
  const [start, end] = c.weightDecay;
  return end + (start - end) * 0.5 * (1 + Math.cos(Math.PI * runProgress(step, c)));
}

/** Linear ramp of the EMA momentum, reaching emaMomentum[1] at the last step. */
export function emaMomentum(step: number, c: ScheduleConfig): number {
  const [start, end] = c.emaMomentum;
  return start + (end - start) * runProgress(step, c);
}

export function scheduleAt(step: number, c: ScheduleConfig): ScheduleValues {
  return { lr: learningRate(step, c), weightDecay: weightDecay(step, c), momentum: emaMomentum(step, c) };
}

export interface Plan {
  totalSteps: number;
  warmupSteps: number;
  stepsPerEpoch: number;
  /** Set by a budget re-fit: the schedules continue from here to the new last step. */
  from?: Anchor;
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

/**
 * The same run with a new last step (never past the epoch plan's; `step` itself ends it now), its
 * schedules continuing from where they are at `step`; warmup keeps its length.
 */
export function refitPlan(plan: Plan, step: number, totalSteps: number, cap: number): Plan {
  const total = Math.max(step, Math.min(totalSteps, cap));
  return {
    ...plan,
    totalSteps: total,
    warmupSteps: Math.min(plan.warmupSteps, total),
    from: { step, run: runProgress(step, plan), cosine: cosineProgress(step, plan) },
  };
}
