/**
 * The training step that bench:train and bench:profile time: what `ijepa train` runs by default
 * (the default recipe's loss, SIGReg and masks) on vit-tiny, from one fixed initialisation, on
 * random patches with seeded masks.
 */
import type { MicroBatch } from '../train/engine.ts';
import { sampleMasks } from '../train/masks.ts';
import { resolveConfig } from '../train/config.ts';
import { recipeOverrides } from '../train/recipes.ts';
import { gridOf, presets } from '../model/presets.ts';
import { encoderSpecs, predictorSpecs } from '../model/vit.ts';
import { ParamStore } from '../model/params.ts';
import { Rng } from '../model/rng.ts';

export const cfg = resolveConfig('vit-tiny', recipeOverrides('ijepa'));
export const m = presets['vit-tiny'];
export const grid = gridOf(m);
/** Values per image in the patch layout. */
export const per = grid.rows * grid.cols * m.patchSize ** 2 * 3;

export const online = ParamStore.init([...encoderSpecs(m), ...predictorSpecs(m)], 0, 'init');
export const target = new ParamStore(encoderSpecs(m), online.data.slice(0, new ParamStore(encoderSpecs(m)).size));
export const grad = new Float32Array(online.size);

/** onnxruntime engine options for the default recipe's step. */
export const engineOptions = (chunk: number, threads: number) => ({
  loss: cfg.loss,
  numTargets: cfg.masks.numTargets,
  sigreg: { ...cfg.sigreg, seed: cfg.seed },
  chunk,
  threads,
});

/** Batch `step`: random patches and the default masks, both seeded by the step. */
export function microBatch(step: number, batch: number): MicroBatch {
  const rng = Rng.for(1, 'bench', step);
  const patches = Float32Array.from({ length: batch * per }, () => rng.normal());
  return { patches, batch, masks: sampleMasks(Rng.for(1, 'masks', step), grid, batch, cfg.masks) };
}
