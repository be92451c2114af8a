/** A few optimizer steps of any engine on the same data, for comparing engines and devices. */
import type { ModelConfig } from '../model/presets.ts';
import { gridOf } from '../model/presets.ts';
import { ParamStore } from '../model/params.ts';
import { Rng } from '../model/rng.ts';
import { encoderSpecs, predictorSpecs } from '../model/vit.ts';
import { AdamW } from '../train/adamw.ts';
import type { Engine, MicroBatch } from '../train/engine.ts';
import { defaultMaskConfig, sampleMasks } from '../train/masks.ts';
import { randomArray } from './helpers.ts';

/** onnxruntime engine options of these comparisons: smooth-L1 with SIGReg, in chunks of 4. */
export const engineOptions = {
  loss: 'smooth-l1' as const,
  numTargets: defaultMaskConfig.numTargets,
  chunk: 4,
  threads: 1,
  sigreg: { weight: 0.1, projections: 8, seed: 1 },
};

export interface State {
  online: ParamStore;
  target: ParamStore;
  adam: AdamW;
}

/** Seeded weights (a target that differs from the online encoder) and zero moments. */
export function initialState(m: ModelConfig): State {
  const online = ParamStore.init([...encoderSpecs(m), ...predictorSpecs(m)], 3, 'init');
  const encoder = new ParamStore(encoderSpecs(m));
  const target = new ParamStore(encoderSpecs(m), online.data.slice(0, encoder.size));
  for (let i = 0; i < target.data.length; i++) target.data[i] += 0.01 * Math.cos(i);
  return { online, target, adam: new AdamW(online.size, online.decayMask()) };
}

/** Micro-batch k of step s: seeded patches and masks. */
export function microBatch(m: ModelConfig, batch: number, s: number, k: number): MicroBatch {
  const n = (m.imageSize / m.patchSize) ** 2;
  const per = n * m.patchSize * m.patchSize * m.channels;
  return {
    patches: randomArray(batch * per, 100 * s + k + 1),
    batch,
    masks: sampleMasks(Rng.for(1, 'm', s, k), gridOf(m), batch, defaultMaskConfig),
  };
}

/** `steps` optimizer steps of `accum` micro-batches each; returns the losses. */
export async function runSteps(
  engine: Engine,
  adam: AdamW,
  m: ModelConfig,
  steps: number,
  accum = 1,
  batch = 6,
): Promise<number[]> {
  const losses: number[] = [];
  for (let s = 0; s < steps; s++) {
    let loss = 0;
    for (let k = 0; k < accum; k++)
      loss += (await engine.accumulate(microBatch(m, batch, s, k), 1 / accum, s)).loss / accum;
    await engine.update({ lr: 1e-3 * (s + 1), weightDecay: 0.05, momentum: 0.99 }, adam);
    losses.push(loss);
  }
  await engine.pull(adam);
  return losses;
}

/** max |a − b| over the elements. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}
