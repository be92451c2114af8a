/**
 * The training run: data → masks → engine step(s) → AdamW → EMA, with schedules per optimizer
 * step, gradient accumulation, diagnostics, atomic checkpoints and exact resume. `train` runs the
 * phases in order: where the run starts (start.ts), its data, its engine, the step loop
 * (reported by progress.ts), and the final checkpoint.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { readsViews, type TrainConfig } from './config.ts';
import type { BackendName } from './tfjs/backend.ts';
import { openDataset } from './data/open.ts';
import { subset, type Dataset } from './data/dataset.ts';
import { validationSplit } from './data/split.ts';
import { BatchLoader, type Position } from './data/loader.ts';
import { validateMaskConfig } from './masks.ts';
import { gridOf, type ModelConfig } from '../model/presets.ts';
import { planByEpochs } from './schedule.ts';
import type { Engine } from './engine.ts';
import type { OrtEngineOptions } from './ort/feeds.ts';
import { OrtEngine } from './ort/engine.ts';
import type { ViewLayout } from '../onnx/training.ts';
import { DeviceEngine } from './ort/device.ts';
import type { Device } from '../runtime/session.ts';
import { cpuHardware, cpuName } from '../runtime/devices.ts';
import { writeCheckpoint } from './checkpoint.ts';
import type { Diagnostics } from './diagnostics.ts';
import type { Preprocess } from '../format/preprocess.ts';
import { checkpointArrays, initialWeights, startingPoint, startMetrics, type Weights } from './start.ts';
import { runSteps, stepSpec, type LoopEnd, type StoppedBy } from './steps.ts';

export interface RunOptions {
  data: string;
  out: string;
  config: TrainConfig;
  resume: boolean;
  /** Which engine runs forward/backward; checkpoints are the same for both. */
  engine?: EngineName;
  /** onnxruntime intra-op threads on the CPU (the CLI's default: all cores). */
  threads: number;
  /** Where the onnxruntime engine runs; on a GPU its whole training state stays there. */
  device?: Device;
  backend: BackendName;
  /** Print progress as plain lines (non-TTY) instead of a bar. */
  plain?: boolean;
  log?: (line: string) => void;
}

export interface RunSummary {
  steps: number;
  imagesSeen: number;
  elapsedSec: number;
  finalLoss: number;
  diagnostics?: Diagnostics;
  stoppedBy: StoppedBy;
}

export const CHECKPOINT_FILE = 'checkpoint.bin';
export const METRICS_FILE = 'metrics.jsonl';
export const CONFIG_FILE = 'config.json';

/** The pre-training data without its validation split; only where it is the labeled training split. */
function heldOut(data: string): Dataset {
  const all = openDataset(data);
  const labeled = openDataset(data, 'train');
  if (all.size !== labeled.size)
    throw new Error(
      `holdout: the pre-training data of ${data} is not its labeled training split (STL-10 adds unlabeled images); hold out a folder instead`,
    );
  return subset(all, validationSplit(all.size).train);
}

export function preprocessOf(c: TrainConfig): Preprocess {
  return { size: c.model.imageSize, mean: c.normalize.mean, std: c.normalize.std, resize: 'squash' };
}

/** One run: where it starts, its data, its weights, its engine, then the step loop and its final checkpoint. */
export async function train(o: RunOptions): Promise<RunSummary> {
  const log = o.log ?? ((s: string) => console.error(s));
  const out = resolve(o.out);
  const ckptPath = join(out, CHECKPOINT_FILE);
  const metricsPath = join(out, METRICS_FILE);
  const { config: cfg, state, restored } = startingPoint(o.config, o.resume, out, ckptPath, log);
  validateMaskConfig(cfg.masks, gridOf(cfg.model));
  const choice: EngineChoice = {
    engine: o.engine ?? 'ort',
    device: o.device ?? 'cpu',
    backend: o.backend,
    threads: o.threads,
  };
  checkEngineChoice(choice, cfg.objective);

  const dataset = cfg.holdout ? heldOut(o.data) : openDataset(o.data);
  // Written once the config and the data are known to be good: a failed start leaves no run directory.
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, CONFIG_FILE), JSON.stringify({ ...cfg, data: o.data }, null, 2));
  const loader = openLoader(dataset, cfg, state.position, log);
  const epochPlan = planByEpochs(loader.batchesPerEpoch, cfg.accum, cfg.epochs, cfg.optim.warmupEpochs, cfg.maxSteps);
  // A time budget fits the plan once the first steps are timed.
  state.plan ??= cfg.timeBudgetMin ? null : epochPlan;

  const { beta1, beta2 } = cfg.optim;
  const weights = initialWeights(cfg.model, cfg.objective, { seed: cfg.seed, beta1, beta2 }, restored, state.step);
  startMetrics(metricsPath, restored ? state.step : null);
  // A GPU runs a micro-batch whole unless the config splits it (memory); a CPU in chunks of 32.
  const chunk = cfg.chunk ?? (choice.device === 'cpu' ? 32 : undefined);
  const { engine, what, hardware } = await openEngine(choice, cfg.model, stepOptions(cfg), chunk, weights);
  log(`engine: ${what}`);
  const save = async () => {
    await engine.pull(weights.optimizer);
    const meta = { config: cfg, data: o.data, state, model: cfg.model, hardware };
    writeCheckpoint(ckptPath, meta, checkpointArrays(weights));
  };

  let end: LoopEnd;
  try {
    end = await runSteps({
      engine,
      loader,
      optimizer: weights.optimizer,
      state,
      epochPlan,
      spec: stepSpec(cfg),
      report: {
        metricsPath,
        logEvery: cfg.logEvery,
        plain: o.plain ?? false,
        term: cfg.sigreg.weight > 0 ? (cfg.objective === 'lejepa' ? 'invariance' : 'prediction') : null,
        log,
      },
      log,
      save,
    });
  } finally {
    await engine.dispose();
    await dataset.close?.();
  }
  if (loader.skippedTotal || state.skipped) log(`skipped ${state.skipped} unreadable images in total`);
  return {
    steps: state.step,
    imagesSeen: state.imagesSeen,
    elapsedSec: state.elapsedSec,
    finalLoss: end.lastLoss,
    diagnostics: end.lastDiag,
    stoppedBy: end.stoppedBy,
  };
}

/**
 * Which engine runs the steps: onnxruntime on the CPU (the default), the same on a GPU with the
 * whole training state kept there, or the TF.js reference engine. Checkpoints are the same for all.
 */
export type EngineName = 'ort' | 'tfjs';

interface EngineChoice {
  engine: EngineName;
  /** Where the onnxruntime engine runs. */
  device: Device;
  /** The TF.js backend (engine `tfjs`). */
  backend: BackendName;
  /** onnxruntime intra-op threads on the CPU. */
  threads: number;
}

/** Refuses a choice the run's objective or the device cannot take. */
function checkEngineChoice(c: EngineChoice, objective: TrainConfig['objective']): void {
  if (c.engine === 'tfjs' && readsViews(objective))
    throw new Error(`objective '${objective}' runs on the onnxruntime engine only (--engine ort)`);
  if (c.device !== 'cpu' && c.engine !== 'ort')
    throw new Error(`--device ${c.device} runs the onnxruntime engine only (--engine ort)`);
}

/** What the step computes, as every engine is told: the loss, SIGReg, the targets and the objective's inputs. */
interface StepOptions extends Omit<OrtEngineOptions, 'chunk' | 'threads' | 'sigreg'> {
  sigreg: NonNullable<OrtEngineOptions['sigreg']>;
}

function stepOptions(cfg: TrainConfig): StepOptions {
  return {
    loss: cfg.loss,
    // MAE's masked patches are one "target block" (train/masks.ts sampleRandomMasks).
    numTargets: cfg.objective === 'mae' ? 1 : cfg.masks.numTargets,
    sigreg: { ...cfg.sigreg, seed: cfg.seed },
    targetLayers: cfg.targetLayers,
    targetView: cfg.augment.targetFlip,
    objective: cfg.objective,
    ...(readsViews(cfg.objective) ? { views: viewLayout(cfg) } : {}),
  };
}

/** The views each image comes as, for the objectives that read them. */
function viewLayout(cfg: TrainConfig): ViewLayout {
  const side = cfg.augment.localSize / cfg.model.patchSize;
  return { globals: cfg.augment.views, locals: cfg.augment.localViews, localGrid: { rows: side, cols: side } };
}

interface OpenedEngine {
  engine: Engine;
  /** How the log names it. */
  what: string;
  /** What a checkpoint records as the hardware that trained it. */
  hardware: string;
}

/**
 * The chosen engine over the run's weights. `chunk` is the images per forward/backward (the
 * config's, else 32 on the CPU and the whole micro-batch on a GPU).
 */
async function openEngine(
  c: EngineChoice,
  model: ModelConfig,
  step: StepOptions,
  chunk: number | undefined,
  w: Weights,
): Promise<OpenedEngine> {
  if (c.engine === 'tfjs')
    return {
      engine: await tfjsEngine(model, step, chunk ?? 32, w, c.backend),
      what: `TF.js (${c.backend})`,
      hardware: `TF.js ${c.backend}, ${cpuName()}`,
    };
  const ort = { ...step, chunk, threads: c.threads };
  if (c.device === 'cpu')
    return {
      engine: await OrtEngine.create(model, w.online, w.target, ort),
      what: `onnxruntime, ${c.threads} thread(s)`,
      hardware: cpuHardware(c.threads),
    };
  return {
    engine: await DeviceEngine.create(model, w.online, w.target, w.optimizer, { ...ort, device: c.device }),
    what: `onnxruntime on ${c.device} (weights, moments and EMA target on the device)`,
    hardware: `onnxruntime on ${c.device}`,
  };
}

/** The TF.js reference engine, loaded only when asked for: serving installs may omit TF.js. */
async function tfjsEngine(
  model: ModelConfig,
  step: StepOptions,
  chunk: number,
  w: Weights,
  backend: BackendName,
): Promise<Engine> {
  let tfjs: [typeof import('./tfjs/backend.ts'), typeof import('./tfjs/engine.ts')];
  try {
    tfjs = await Promise.all([import('./tfjs/backend.ts'), import('./tfjs/engine.ts')]);
  } catch (e) {
    throw new Error(
      `--engine tfjs needs TensorFlow.js, which this install omits (a serving install: npm ci --omit=dev): ${(e as Error).message.split('\n')[0]}`,
    );
  }
  await tfjs[0].useBackend(backend);
  return new tfjs[1].TfjsEngine(model, w.online, w.target, {
    loss: step.loss,
    sigregWeight: step.sigreg.weight,
    sigregProjections: step.sigreg.projections,
    seed: step.sigreg.seed,
    chunk,
    targetLayers: step.targetLayers,
    objective: step.objective === 'mae' ? 'mae' : 'ijepa',
  });
}

/** The seeded, resumable stream of micro-batches, continuing at `position`. */
function openLoader(dataset: Dataset, cfg: TrainConfig, position: Position, log: (s: string) => void): BatchLoader {
  // Only the views objectives draw views.
  const views = readsViews(cfg.objective) ? {} : { views: 0, localViews: 0 };
  return new BatchLoader(
    dataset,
    {
      batch: cfg.batch,
      seed: cfg.seed,
      preprocess: preprocessOf(cfg),
      patch: cfg.model.patchSize,
      augment: { ...cfg.augment, ...views },
      onSkip: (what, err) => log(`warning: skipped unreadable image ${what}: ${err.message.split('\n')[0]}`),
    },
    position,
  );
}
