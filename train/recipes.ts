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
} satisfies Record<string, ConfigOverrides>;

export type RecipeName = keyof typeof recipes | 'default';
export const DEFAULT_RECIPE: keyof typeof recipes = 'sigreg-strong';
export const recipeNames = ['default', ...Object.keys(recipes)] as RecipeName[];

export function recipeOverrides(name: RecipeName): ConfigOverrides {
  const resolved = name === 'default' ? DEFAULT_RECIPE : name;
  return { ...(recipes[resolved] as ConfigOverrides), recipe: resolved };
}
