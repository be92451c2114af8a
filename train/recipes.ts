/**
 * Named training recipes: overrides on top of a preset's defaults, applied before --config and
 * flags. `reference` is the published I-JEPA recipe (smooth-L1, EMA 0.996 → 1, peak LR 1e-3);
 * the others are the candidates of the small-budget study (docs/recipe-study.md), and `default`
 * is the one that study chose.
 */
import type { ConfigOverrides } from './config.ts';

export const recipes = {
  reference: { loss: 'smooth-l1' },
  'fast-ema': { loss: 'smooth-l1', optim: { ema: [0.99, 1] } },
  'lr2x': { loss: 'smooth-l1', optim: { lr: 2e-3, startLr: 4e-4 } },
  'fast-ema-lr2x': { loss: 'smooth-l1', optim: { ema: [0.99, 1], lr: 2e-3, startLr: 4e-4 } },
  'batch64': { loss: 'smooth-l1', batch: 64 },
  'mse': { loss: 'mse' },
  // SIGReg keeps pooled context features spread out (the reference collapses at these budgets).
  'sigreg': { loss: 'smooth-l1', sigreg: { weight: 0.02 } },
  'sigreg-strong': { loss: 'smooth-l1', sigreg: { weight: 0.1 } },
  'sigreg-lr2x': { loss: 'smooth-l1', sigreg: { weight: 0.02 }, optim: { lr: 2e-3, startLr: 4e-4 } },
  // Throughput: a 4×4 grid of 8-px patches (room for 3 target blocks), or a half-width network.
  'patch8': { loss: 'smooth-l1', sigreg: { weight: 0.1 }, model: { patchSize: 8 }, masks: { numTargets: 3 } },
  'narrow': { loss: 'smooth-l1', sigreg: { weight: 0.1 }, model: { dim: 96, heads: 3, predDim: 48, predHeads: 3 } },
  // After ~300 steps an EMA of 0.996 → 1 still holds ~60% of its random init (Π m); does a target
  // that leaves it sooner learn faster? SIGReg guards it against collapse. (It did not help.)
  'sigreg-fast-ema': { loss: 'smooth-l1', sigreg: { weight: 0.1 }, optim: { ema: [0.99, 1] } },
  'sigreg-ema97': { loss: 'smooth-l1', sigreg: { weight: 0.1 }, optim: { ema: [0.97, 1] } },
  // Masking: two larger targets (~20 patches each), or a context of half the image (harder, and faster).
  'targets-large': { loss: 'smooth-l1', sigreg: { weight: 0.1 }, masks: { numTargets: 2, targetScale: [0.25, 0.3] } },
  'context-small': { loss: 'smooth-l1', sigreg: { weight: 0.1 }, masks: { contextScale: [0.5, 0.65] } },
  'pred-deep': { loss: 'smooth-l1', sigreg: { weight: 0.1 }, model: { predDepth: 6 } },
  'sigreg-batch64': { loss: 'smooth-l1', sigreg: { weight: 0.1 }, batch: 64 },
  // 5% of the run in warmup instead of the reference's 15 of 100 epochs.
  'sigreg-warmup5': { loss: 'smooth-l1', sigreg: { weight: 0.1 }, optim: { warmupEpochs: 5 } },
  // The small wins above, stacked: half width, half-image context, two large targets.
  'narrow-masks': {
    loss: 'smooth-l1', sigreg: { weight: 0.1 },
    model: { dim: 96, heads: 3, predDim: 48, predHeads: 3 },
    masks: { numTargets: 2, targetScale: [0.25, 0.3], contextScale: [0.5, 0.65] },
  },
} satisfies Record<string, ConfigOverrides>;

export type RecipeName = keyof typeof recipes | 'default';
export const DEFAULT_RECIPE: keyof typeof recipes = 'sigreg-strong';
export const recipeNames = ['default', ...Object.keys(recipes)] as RecipeName[];

export function recipeOverrides(name: RecipeName): ConfigOverrides {
  const resolved = name === 'default' ? DEFAULT_RECIPE : name;
  return { ...(recipes[resolved] as ConfigOverrides), recipe: resolved };
}
