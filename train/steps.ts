/**
 * The step loop: optimizer steps until the plan is done, the time budget spent or a signal asks
 * to stop, then the final checkpoint. One step is the paper's: draw masks for each micro-batch, accumulate the gradients of
 * its loss, then AdamW and the EMA at the step's scheduled values; diagnostics, metrics and
 * checkpoints on their cadences.
 */
import type { TrainConfig } from './config.ts';
import type { BatchLoader } from './data/loader.ts';
import { sampleMasks, sampleRandomMasks, type Grid, type MaskConfig } from './masks.ts';
import type { AdamW } from './adamw.ts';
import { scheduleAt, type Plan, type ScheduleConfig, type ScheduleValues } from './schedule.ts';
import { BudgetFit } from './budget.ts';
import type { Engine, MicroBatch } from './engine.ts';
import { collapseWarning, normalizedFeatureStd, rankMe, type Diagnostics } from './diagnostics.ts';
import type { RunState } from './start.ts';
import { Progress, type ProgressOptions, type StepRecord } from './progress.ts';
import { gridOf } from '../model/presets.ts';
import { Rng } from '../model/rng.ts';

/** Token rows (first images of the batch) that RankMe is computed over. */
const RANKME_ROWS = 1024;

/** What each optimizer step does, unpacked once from the config. */
export interface StepSpec {
  /** Micro-batches per optimizer step. */
  accum: number;
  imagesPerStep: number;
  seed: number;
  grid: Grid;
  masks: MaskConfig;
  /** The schedules' values; the plan gives their length. */
  schedule: Omit<ScheduleConfig, keyof Plan>;
  /** Diagnostics and checkpoints every this many steps. */
  diagEvery: number;
  checkpointEvery: number;
  /** Encoder width, for the diagnostics. */
  dim: number;
  /** Whether the loss has a SIGReg term (the record then holds it and the prediction loss apart). */
  sigreg: boolean;
  /** Wall-clock minutes the schedule is fitted to, if any. */
  budgetMin?: number;
  /**
   * Objective `hybrid`: I-JEPA masks each of this many global views of an image, so the
   * micro-batch's masked images are its views.
   */
  maskedViews?: number;
  /** Objective `mae`: each image hides this fraction of its patches at random, instead of I-JEPA's blocks. */
  maskRatio?: number;
}

export function stepSpec(cfg: TrainConfig): StepSpec {
  return {
    accum: cfg.accum,
    imagesPerStep: cfg.batch * cfg.accum,
    seed: cfg.seed,
    grid: gridOf(cfg.model),
    masks: cfg.masks,
    schedule: {
      startLr: cfg.optim.startLr,
      peakLr: cfg.optim.lr,
      finalLr: cfg.optim.finalLr,
      weightDecay: cfg.optim.weightDecay,
      emaMomentum: cfg.optim.ema,
    },
    diagEvery: cfg.diagEvery,
    checkpointEvery: cfg.checkpointEvery,
    dim: cfg.model.dim,
    sigreg: cfg.sigreg.weight > 0,
    budgetMin: cfg.timeBudgetMin,
    ...(cfg.objective === 'hybrid' ? { maskedViews: cfg.augment.views } : {}),
    ...(cfg.objective === 'mae' ? { maskRatio: cfg.maskRatio } : {}),
  };
}

export interface StepLoop {
  engine: Engine;
  loader: BatchLoader;
  optimizer: AdamW;
  /** Advanced in place; its plan is replaced when a time budget fits one. */
  state: RunState;
  /** The plan until a time budget has fitted one. */
  epochPlan: Plan;
  spec: StepSpec;
  report: ProgressOptions;
  log: (line: string) => void;
  /** Writes the checkpoint. */
  save: () => Promise<void>;
}

export type StoppedBy = 'steps' | 'budget' | 'signal';

export interface LoopEnd {
  stoppedBy: StoppedBy;
  /** Loss of the last step (NaN when none ran). */
  lastLoss: number;
  /** The last diagnostics computed. */
  lastDiag?: Diagnostics;
}

/** The loop while it runs: its clock, its budget, its progress report and the stop signal. */
interface Running extends StepLoop {
  /** Seconds of the run so far, earlier sessions included. */
  elapsed: () => number;
  budget: BudgetFit | null;
  budgetSec: number;
  progress: Progress;
  stopRequested: () => boolean;
}

/** Optimizer steps until the plan is done, the budget spent or a signal asks to stop; then the final checkpoint. */
export async function runSteps(r: StepLoop): Promise<LoopEnd> {
  const { state, spec } = r;
  const signal = stopOnSignal(r.log);
  const budgetSec = spec.budgetMin ? spec.budgetMin * 60 : Infinity;
  const progress = new Progress(r.report, (state.plan ?? r.epochPlan).totalSteps, state.step);
  const budget = spec.budgetMin
    ? new BudgetFit(r.epochPlan, budgetSec, { plan: state.plan, step: state.step, elapsedSec: state.elapsedSec })
    : null;
  const startedAt = performance.now() - state.elapsedSec * 1000;
  const elapsed = () => (performance.now() - startedAt) / 1000;
  try {
    const end = await steps({ ...r, elapsed, budget, budgetSec, progress, stopRequested: () => signal.requested });
    state.elapsedSec = elapsed();
    await r.save();
    return end;
  } finally {
    progress.stop();
    signal.dispose();
  }
}

async function steps(r: Running): Promise<LoopEnd> {
  const { state, spec } = r;
  let lastLoss = NaN;
  let lastDiag: Diagnostics | undefined;
  for (;;) {
    const stoppedBy = stopReason(r);
    if (stoppedBy) return { stoppedBy, lastLoss, lastDiag };

    const t0 = performance.now();
    const step = await accumulate(r.engine, r.loader, spec, state);
    const s = scheduleAt(state.step, { ...(state.plan ?? r.epochPlan), ...spec.schedule });
    await r.engine.update(s, r.optimizer);
    state.step++;
    state.imagesSeen += spec.imagesPerStep;
    lastLoss = step.loss;
    if (r.budget) refit(r, r.budget, (performance.now() - t0) / 1000);

    const record = stepRecord(state, step, s, r.elapsed(), spec.sigreg);
    const last = state.plan !== null && state.step >= state.plan.totalSteps;
    let diag: Diagnostics | undefined;
    if (state.step % spec.diagEvery === 0 || state.step === 1 || last) {
      diag = lastDiag = await diagnose(r.engine, step.lastBatch, spec.dim);
      const warn = collapseWarning(diag, spec.dim);
      if (warn) r.log(`\n!!! step ${state.step}: ${warn}`);
    }
    r.progress.step(record, spec.imagesPerStep, diag, state.plan?.totalSteps);
    state.elapsedSec = r.elapsed();
    if (state.step % spec.checkpointEvery === 0) await r.save();
  }
}

/** SIGINT/SIGTERM ask the run to stop after the current step (and checkpoint); a second one aborts. */
function stopOnSignal(log: (s: string) => void): { readonly requested: boolean; dispose(): void } {
  let requested = false;
  const onSignal = () => {
    if (requested) process.exit(130);
    requested = true;
    log('\nstopping after this step (checkpointing); press Ctrl-C again to abort');
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    get requested() {
      return requested;
    },
    dispose() {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}

/** Why the run stops before its next step, or null to go on. */
function stopReason(r: Running): StoppedBy | null {
  const elapsed = r.elapsed();
  if (r.state.plan && r.state.step >= r.state.plan.totalSteps) return 'steps';
  if (elapsed >= r.budgetSec) return 'budget';
  if (r.stopRequested()) return 'signal';
  return null;
}

interface Accumulated {
  /** Losses averaged over the step's micro-batches. */
  loss: number;
  sigreg: number;
  predLoss: number;
  /** The last micro-batch, which the diagnostics read. */
  lastBatch: MicroBatch;
}

/** `accum` micro-batches, each with its own masks, their gradients summed by the engine. */
async function accumulate(engine: Engine, loader: BatchLoader, spec: StepSpec, state: RunState): Promise<Accumulated> {
  const out = { loss: 0, sigreg: 0, predLoss: 0, lastBatch: null as MicroBatch | null };
  for (let k = 0; k < spec.accum; k++) {
    const b = await loader.next();
    // Hybrid: the images I-JEPA masks are the global views.
    const masked = spec.maskedViews
      ? { patches: b.views!, batch: b.batch * spec.maskedViews }
      : { patches: b.patches, batch: b.batch };
    const rng = Rng.for(spec.seed, 'masks', state.step, k);
    const masks = spec.maskRatio
      ? sampleRandomMasks(rng, spec.grid, masked.batch, spec.maskRatio)
      : sampleMasks(rng, spec.grid, masked.batch, spec.masks);
    out.lastBatch = {
      ...masked,
      masks,
      ...(b.targetView ? { targetView: b.targetView } : {}),
      ...(b.views ? { views: b.views } : {}),
      ...(b.locals ? { locals: b.locals } : {}),
    };
    const r = await engine.accumulate(out.lastBatch, 1 / spec.accum, state.step);
    if (!Number.isFinite(r.loss))
      throw new Error(`loss became ${r.loss} at step ${state.step}; the last checkpoint is intact`);
    out.loss += r.loss / spec.accum;
    out.sigreg += r.sigreg / spec.accum;
    out.predLoss += r.predLoss / spec.accum;
    state.position = b.end;
    state.skipped += b.skipped;
  }
  return out as Accumulated;
}

/** Tells the budget the step's time; a plan it makes (the first fit, or a re-fit) becomes the run's. */
function refit(r: Running, budget: BudgetFit, stepSec: number): void {
  const line = budget.observe(r.state.step, stepSec, r.elapsed());
  if (budget.plan && budget.plan !== r.state.plan) {
    r.state.plan = budget.plan;
    r.progress.setTotal(budget.plan.totalSteps);
  }
  if (line) r.log(`\n${line}`);
}

function stepRecord(
  state: RunState,
  step: Accumulated,
  s: ScheduleValues,
  elapsed: number,
  sigreg: boolean,
): StepRecord {
  return {
    step: state.step,
    loss: step.loss,
    lr: s.lr,
    wd: s.weightDecay,
    momentum: s.momentum,
    epoch: state.position.epoch,
    images: state.imagesSeen,
    elapsed,
    // The zero-predictor diagnostic is a prediction loss: compare it with predLoss, not the total.
    ...(sigreg ? { sigreg: step.sigreg, predLoss: step.predLoss } : {}),
  };
}

/** Collapse diagnostics of the target encoder on `mb`, and the online–target gap. */
async function diagnose(engine: Engine, mb: MicroBatch, dim: number): Promise<Diagnostics> {
  const p = await engine.probe(mb);
  return {
    featStd: normalizedFeatureStd(p.tokens, p.tokens.length / dim, dim),
    featStdHealthy: 1 / Math.sqrt(dim),
    rankMe: rankMe(p.tokens, Math.min(RANKME_ROWS, p.tokens.length / dim), dim),
    emaGap: await engine.emaGap(),
    zeroLoss: p.zeroLoss,
  };
}
