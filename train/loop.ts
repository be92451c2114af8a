/**
 * The training run: data → masks → engine step(s) → AdamW → EMA, with schedules per optimizer
 * step, gradient accumulation, diagnostics, atomic checkpoints and exact resume.
 */
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { availableParallelism, cpus } from 'node:os';
import cliProgress from 'cli-progress';
import type { TrainConfig } from './config.ts';
import { parseConfig } from './config.ts';
import type { BackendName } from './tfjs/backend.ts';
import { openDataset } from './data/open.ts';
import { subset, type Dataset } from './data/dataset.ts';
import { validationSplit } from './data/split.ts';
import { BatchLoader, type Position } from './data/loader.ts';
import { sampleMasks, validateMaskConfig } from './masks.ts';
import { gridOf } from '../model/presets.ts';
import { encoderSpecs, headSpecs } from '../model/vit.ts';
import { ParamStore } from '../model/params.ts';
import { AdamW } from './adamw.ts';
import { planByEpochs, scheduleAt, type Plan } from './schedule.ts';
import { BudgetFit } from './budget.ts';
import type { Engine, MicroBatch } from './engine.ts';
import { OrtEngine } from './ort/engine.ts';
import { DeviceEngine } from './ort/device.ts';
import type { Device } from '../runtime/session.ts';
import { readCheckpoint, writeCheckpoint } from './checkpoint.ts';
import { collapseWarning, normalizedFeatureStd, rankMe, type Diagnostics } from './diagnostics.ts';
import { Rng } from '../model/rng.ts';
import type { Preprocess } from '../format/preprocess.ts';

export interface RunOptions {
  data: string;
  out: string;
  config: TrainConfig;
  resume: boolean;
  /** Which engine runs forward/backward; checkpoints are the same for both. */
  engine?: EngineName;
  /** onnxruntime intra-op threads (default: all cores). */
  threads?: number;
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
  stoppedBy: 'steps' | 'budget' | 'signal';
}

export type EngineName = 'ort' | 'tfjs';

export const CHECKPOINT_FILE = 'checkpoint.bin';
export const METRICS_FILE = 'metrics.jsonl';
export const CONFIG_FILE = 'config.json';

interface State {
  step: number;
  position: Position;
  plan: Plan | null;
  imagesSeen: number;
  elapsedSec: number;
  skipped: number;
}

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

/** Token rows (first images of the batch) that RankMe is computed over. */
const RANKME_ROWS = 1024;

export async function train(o: RunOptions): Promise<RunSummary> {
  const log = o.log ?? ((s: string) => console.error(s));
  const out = resolve(o.out);
  const ckptPath = join(out, CHECKPOINT_FILE);
  const metricsPath = join(out, METRICS_FILE);
  let cfg = o.config;

  let state: State = {
    step: 0,
    position: { epoch: 0, cursor: 0 },
    plan: null,
    imagesSeen: 0,
    elapsedSec: 0,
    skipped: 0,
  };
  let restored: ReturnType<typeof readCheckpoint> | null = null;
  if (o.resume) {
    if (!existsSync(ckptPath)) throw new Error(`--resume: no checkpoint in ${out}`);
    restored = readCheckpoint(ckptPath);
    // The run's own config wins on resume: the weights and schedule were made with it.
    cfg = parseConfig(restored.meta.config, ckptPath);
    state = restored.meta.state as State;
    log(`resuming ${out} at step ${state.step} (epoch ${state.position.epoch}, item ${state.position.cursor})`);
  } else if (existsSync(ckptPath)) {
    throw new Error(`${out} already holds a checkpoint: pass --resume to continue it, or choose another --out`);
  }
  const grid = gridOf(cfg.model);
  validateMaskConfig(cfg.masks, grid);
  const engineName = o.engine ?? 'ort';
  if (engineName === 'tfjs' && cfg.objective !== 'ijepa')
    throw new Error(`objective '${cfg.objective}' runs on the onnxruntime engine only (--engine ort)`);

  // Views per image: only objective `views` draws them.
  const views = cfg.objective === 'views' ? cfg.augment.views : 0;
  const dataset = cfg.holdout ? heldOut(o.data) : openDataset(o.data);
  // Written once the config and the data are known to be good: a failed start leaves no run directory.
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, CONFIG_FILE), JSON.stringify({ ...cfg, data: o.data }, null, 2));
  const loader = new BatchLoader(
    dataset,
    {
      batch: cfg.batch,
      seed: cfg.seed,
      preprocess: preprocessOf(cfg),
      patch: cfg.model.patchSize,
      augment: { ...cfg.augment, views },
      onSkip: (what, err) => log(`warning: skipped unreadable image ${what}: ${err.message.split('\n')[0]}`),
    },
    state.position,
  );
  const epochPlan = planByEpochs(loader.batchesPerEpoch, cfg.accum, cfg.epochs, cfg.optim.warmupEpochs, cfg.maxSteps);
  let plan: Plan | null = state.plan ?? (cfg.timeBudgetMin ? null : epochPlan);

  const encSpecs = encoderSpecs(cfg.model);
  const specs = [...encSpecs, ...headSpecs(cfg.model, cfg.objective)];
  const online = restored
    ? new ParamStore(specs, restored.arrays.get('online'))
    : ParamStore.init(specs, cfg.seed, 'init');
  const encSize = new ParamStore(encSpecs).size;
  const target = restored
    ? new ParamStore(encSpecs, restored.arrays.get('target'))
    : new ParamStore(encSpecs, online.data.slice(0, encSize));
  const optimizer = new AdamW(online.size, online.decayMask(), {
    beta1: cfg.optim.beta1,
    beta2: cfg.optim.beta2,
    eps: 1e-8,
  });
  if (restored) {
    optimizer.m.set(restored.arrays.get('adam.m')!);
    optimizer.v.set(restored.arrays.get('adam.v')!);
    optimizer.t = state.step;
    // Metrics logged after the checkpoint belong to the lost tail of the run: drop them.
    if (existsSync(metricsPath)) {
      const kept = readFileSync(metricsPath, 'utf8')
        .split('\n')
        .filter((l) => l && JSON.parse(l).step <= state.step);
      writeFileSync(metricsPath, kept.map((l) => `${l}\n`).join(''));
    }
  } else writeFileSync(metricsPath, '');

  const device = o.device ?? 'cpu';
  if (device !== 'cpu' && engineName !== 'ort')
    throw new Error(`--device ${device} runs the onnxruntime engine only (--engine ort)`);
  // A GPU runs a micro-batch whole unless the config splits it (memory); a CPU in chunks of 32.
  const chunk = cfg.chunk ?? (device === 'cpu' ? 32 : undefined);
  const ortOptions = {
    loss: cfg.loss,
    numTargets: cfg.masks.numTargets,
    chunk,
    threads: o.threads,
    sigreg: { ...cfg.sigreg, seed: cfg.seed },
    targetLayers: cfg.targetLayers,
    targetView: cfg.augment.targetFlip,
    views: views || undefined,
  };
  const cpu = `${cpus()[0]?.model.trim() ?? 'unknown CPU'}`;
  const threads = o.threads ?? availableParallelism();
  // The engine, what the log calls it, and what the checkpoint records as the hardware.
  const [engine, what, hardware]: [Engine, string, string] =
    engineName === 'tfjs'
      ? [
          await tfjsEngine(cfg, online, target, o.backend, chunk ?? 32),
          `TF.js (${o.backend})`,
          `TF.js ${o.backend}, ${cpu}`,
        ]
      : device === 'cpu'
        ? [
            await OrtEngine.create(cfg.model, online, target, ortOptions),
            `onnxruntime, ${threads} thread(s)`,
            `onnxruntime on the CPU, ${threads} thread(s), ${cpu}`,
          ]
        : [
            await DeviceEngine.create(cfg.model, online, target, optimizer, { ...ortOptions, device }),
            `onnxruntime on ${device} (weights, moments and EMA target on the device)`,
            `onnxruntime on ${device}`,
          ];
  log(`engine: ${what}`);

  const save = async () => {
    await engine.pull(optimizer);
    writeCheckpoint(ckptPath, { config: cfg, data: o.data, state: { ...state, plan }, model: cfg.model, hardware }, [
      ['online', online.data],
      ['target', target.data],
      ['adam.m', optimizer.m],
      ['adam.v', optimizer.v],
    ]);
  };
  let stopSignal = false;
  const onSignal = () => {
    if (stopSignal) process.exit(130);
    stopSignal = true;
    log('\nstopping after this step (checkpointing); press Ctrl-C again to abort');
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const budgetSec = cfg.timeBudgetMin ? cfg.timeBudgetMin * 60 : Infinity;
  const bar = o.plain
    ? null
    : new cliProgress.SingleBar(
        {
          format:
            'train |{bar}| {value}/{total} steps | loss {loss} | lr {lr} | mom {mom} | {ips} img/s | ETA {eta_formatted}',
          hideCursor: true,
          etaBuffer: 20,
        },
        cliProgress.Presets.shades_classic,
      );
  bar?.start(plan?.totalSteps ?? epochPlan.totalSteps, state.step, { loss: '-', lr: '-', mom: '-', ips: '-' });

  let lastLoss = NaN;
  let lastDiag: Diagnostics | undefined;
  let stoppedBy: RunSummary['stoppedBy'] = 'steps';
  const budget = cfg.timeBudgetMin
    ? new BudgetFit(epochPlan, budgetSec, { plan, step: state.step, elapsedSec: state.elapsedSec })
    : null;
  let windowStart = performance.now();
  let windowImages = 0;
  const startedAt = performance.now() - state.elapsedSec * 1000;
  const imagesPerStep = cfg.batch * cfg.accum;

  try {
    for (;;) {
      const elapsed = (performance.now() - startedAt) / 1000;
      if (plan && state.step >= plan.totalSteps) break;
      if (elapsed >= budgetSec) {
        stoppedBy = 'budget';
        break;
      }
      if (stopSignal) {
        stoppedBy = 'signal';
        break;
      }

      const t0 = performance.now();
      let loss = 0;
      let sig = 0;
      let predLoss = 0;
      let lastBatch: MicroBatch | null = null;
      for (let k = 0; k < cfg.accum; k++) {
        const b = await loader.next();
        const masks = sampleMasks(Rng.for(cfg.seed, 'masks', state.step, k), grid, b.batch, cfg.masks);
        lastBatch = {
          patches: b.patches,
          batch: b.batch,
          masks,
          ...(b.targetView ? { targetView: b.targetView } : {}),
          ...(b.views ? { views: b.views } : {}),
        };
        const r = await engine.accumulate(lastBatch, 1 / cfg.accum, state.step);
        if (!Number.isFinite(r.loss))
          throw new Error(`loss became ${r.loss} at step ${state.step}; the last checkpoint is intact`);
        loss += r.loss / cfg.accum;
        sig += r.sigreg / cfg.accum;
        predLoss += r.predLoss / cfg.accum;
        state.position = b.end;
        state.skipped += b.skipped;
      }
      const activePlan = plan ?? epochPlan;
      const s = scheduleAt(state.step, {
        ...activePlan,
        startLr: cfg.optim.startLr,
        peakLr: cfg.optim.lr,
        finalLr: cfg.optim.finalLr,
        weightDecay: cfg.optim.weightDecay,
        emaMomentum: cfg.optim.ema,
      });
      await engine.update(s, optimizer);
      state.step++;
      state.imagesSeen += imagesPerStep;
      lastLoss = loss;
      windowImages += imagesPerStep;

      if (budget) {
        const line = budget.observe(
          state.step,
          (performance.now() - t0) / 1000,
          (performance.now() - startedAt) / 1000,
        );
        if (budget.plan && budget.plan !== plan) {
          plan = budget.plan;
          bar?.setTotal(plan.totalSteps);
        }
        if (line) log(`\n${line}`);
      }

      const record: Record<string, unknown> = {
        step: state.step,
        loss,
        lr: s.lr,
        wd: s.weightDecay,
        momentum: s.momentum,
        epoch: state.position.epoch,
        images: state.imagesSeen,
        elapsed: (performance.now() - startedAt) / 1000,
        // The zero-predictor diagnostic is a prediction loss: compare it with predLoss, not the total.
        ...(cfg.sigreg.weight > 0 ? { sigreg: sig, predLoss } : {}),
      };
      const last = plan !== null && state.step >= plan.totalSteps;
      if (state.step % cfg.diagEvery === 0 || state.step === 1 || last) {
        const p = await engine.probe(lastBatch!);
        const d = cfg.model.dim;
        lastDiag = {
          featStd: normalizedFeatureStd(p.tokens, p.tokens.length / d, d),
          featStdHealthy: 1 / Math.sqrt(d),
          rankMe: rankMe(p.tokens, Math.min(RANKME_ROWS, p.tokens.length / d), d),
          emaGap: await engine.emaGap(),
          zeroLoss: p.zeroLoss,
        };
        Object.assign(record, lastDiag);
        const warn = collapseWarning(lastDiag, d);
        if (warn) log(`\n!!! step ${state.step}: ${warn}`);
      }
      if (state.step % cfg.logEvery === 0 || 'featStd' in record) {
        const now = performance.now();
        record.imgPerSec = windowImages / ((now - windowStart) / 1000);
        windowStart = now;
        windowImages = 0;
        appendFileSync(metricsPath, `${JSON.stringify(record)}\n`);
        if (o.plain) {
          log(
            `step ${state.step}/${plan?.totalSteps ?? '?'} loss ${loss.toFixed(4)}${cfg.sigreg.weight > 0 ? ` (${cfg.objective === 'views' ? 'disagreement' : 'prediction'} ${predLoss.toFixed(4)})` : ''} lr ${s.lr.toExponential(2)} mom ${s.momentum.toFixed(4)} ${(record.imgPerSec as number).toFixed(1)} img/s` +
              (lastDiag && 'featStd' in record
                ? ` | featStd ${lastDiag.featStd.toFixed(4)} (healthy ${lastDiag.featStdHealthy.toFixed(4)}) rankMe ${lastDiag.rankMe.toFixed(1)} emaGap ${lastDiag.emaGap.toExponential(2)} zeroLoss ${lastDiag.zeroLoss.toFixed(4)}`
                : ''),
          );
        }
        bar?.update(state.step, {
          loss: loss.toFixed(4),
          lr: s.lr.toExponential(2),
          mom: s.momentum.toFixed(4),
          ips: (record.imgPerSec as number).toFixed(1),
        });
      } else bar?.update(state.step);
      state.elapsedSec = (performance.now() - startedAt) / 1000;
      if (state.step % cfg.checkpointEvery === 0) await save();
    }
    state.elapsedSec = (performance.now() - startedAt) / 1000;
    await save();
  } finally {
    bar?.stop();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await engine.dispose();
    await dataset.close?.();
  }
  if (loader.skippedTotal || state.skipped) log(`skipped ${state.skipped} unreadable images in total`);
  return {
    steps: state.step,
    imagesSeen: state.imagesSeen,
    elapsedSec: state.elapsedSec,
    finalLoss: lastLoss,
    diagnostics: lastDiag,
    stoppedBy,
  };
}

/** The TF.js reference engine, loaded only when asked for: serving installs may omit TF.js. */
async function tfjsEngine(
  cfg: TrainConfig,
  online: ParamStore,
  target: ParamStore,
  backend: BackendName,
  chunk: number,
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
  return new tfjs[1].TfjsEngine(cfg.model, online, target, {
    loss: cfg.loss,
    sigregWeight: cfg.sigreg.weight,
    sigregProjections: cfg.sigreg.projections,
    seed: cfg.seed,
    chunk,
    targetLayers: cfg.targetLayers,
  });
}
