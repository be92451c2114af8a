/**
 * Where a run starts: from nothing, or from the checkpoint in its directory. A resumed run takes
 * back its config, its progress (step, stream position, plan, clock), its weights and AdamW
 * moments, and drops the metrics logged after that checkpoint.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { parseConfig, type TrainConfig } from './config.ts';
import { readCheckpoint, type Checkpoint } from './checkpoint.ts';
import type { Position } from './data/loader.ts';
import type { Plan } from './schedule.ts';
import { AdamW } from './adamw.ts';
import { encoderSpecs, headSpecs } from '../model/vit.ts';
import { ParamStore } from '../model/params.ts';
import type { ModelConfig } from '../model/presets.ts';

/** A run's progress: what a checkpoint records besides the arrays, and all that resume needs. */
export interface RunState {
  /** Optimizer steps done. */
  step: number;
  /** Where the data stream continues. */
  position: Position;
  /** The run's schedule plan; null until a time budget has fitted one. */
  plan: Plan | null;
  imagesSeen: number;
  elapsedSec: number;
  /** Unreadable images skipped so far. */
  skipped: number;
}

export interface Start {
  /** The run's config: the given one, or on resume the checkpoint's own. */
  config: TrainConfig;
  state: RunState;
  /** The checkpoint resumed from, or null for a fresh run. */
  restored: Checkpoint | null;
}

/** A fresh run from `config`, or (`resume`) the run whose checkpoint is at `checkpoint`. */
export function startingPoint(
  config: TrainConfig,
  resume: boolean,
  out: string,
  checkpoint: string,
  log: (s: string) => void,
): Start {
  if (resume) {
    if (!existsSync(checkpoint)) throw new Error(`--resume: no checkpoint in ${out}`);
    const restored = readCheckpoint(checkpoint);
    // The run's own config wins on resume: the weights and schedule were made with it.
    const resumed = parseConfig(restored.meta.config, checkpoint);
    const state = restored.meta.state as RunState;
    log(`resuming ${out} at step ${state.step} (epoch ${state.position.epoch}, item ${state.position.cursor})`);
    return { config: resumed, state, restored };
  }
  if (existsSync(checkpoint))
    throw new Error(`${out} already holds a checkpoint: pass --resume to continue it, or choose another --out`);
  const state = { step: 0, position: { epoch: 0, cursor: 0 }, plan: null, imagesSeen: 0, elapsedSec: 0, skipped: 0 };
  return { config, state, restored: null };
}

/** What an optimizer step changes: the online network (encoder + head), its EMA target encoder, AdamW. */
export interface Weights {
  online: ParamStore;
  target: ParamStore;
  optimizer: AdamW;
}

/**
 * Fresh weights (the online network drawn from `seed`, the target a copy of its encoder), or
 * those of the checkpoint with AdamW's moments and update count (`step`).
 */
export function initialWeights(
  model: ModelConfig,
  objective: TrainConfig['objective'],
  o: { seed: number; beta1: number; beta2: number },
  restored: Checkpoint | null,
  step: number,
): Weights {
  const encSpecs = encoderSpecs(model);
  const specs = [...encSpecs, ...headSpecs(model, objective)];
  const online = restored
    ? new ParamStore(specs, restored.arrays.get('online'))
    : ParamStore.init(specs, o.seed, 'init');
  const encSize = new ParamStore(encSpecs).size;
  const target = restored
    ? new ParamStore(encSpecs, restored.arrays.get('target'))
    : new ParamStore(encSpecs, online.data.slice(0, encSize));
  const optimizer = new AdamW(online.size, online.decayMask(), { beta1: o.beta1, beta2: o.beta2, eps: 1e-8 });
  if (restored) {
    optimizer.m.set(restored.arrays.get('adam.m')!);
    optimizer.v.set(restored.arrays.get('adam.v')!);
    optimizer.t = step;
  }
  return { online, target, optimizer };
}

/** The arrays a checkpoint holds, in file order. */
export function checkpointArrays(w: Weights): [string, Float32Array][] {
  return [
    ['online', w.online.data],
    ['target', w.target.data],
    ['adam.m', w.optimizer.m],
    ['adam.v', w.optimizer.v],
  ];
}

/**
 * An empty metrics file for a fresh run (`resumedAt` null); on resume, the file without the lines
 * logged after the checkpoint's step, which belong to the lost tail of the run.
 */
export function startMetrics(path: string, resumedAt: number | null): void {
  if (resumedAt === null) {
    writeFileSync(path, '');
    return;
  }
  if (!existsSync(path)) return;
  const kept = readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l && JSON.parse(l).step <= resumedAt);
  writeFileSync(path, kept.map((l) => `${l}\n`).join(''));
}
