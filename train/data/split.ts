/**
 * The validation split every recipe decision is made on: a fixed, seeded 1/6 of the labeled
 * training items (10k of Fashion-MNIST's 60k, ~8.3k of CIFAR-10's 50k). Pre-training with
 * `holdout` skips these items, so validation images are never seen, labeled or not; the
 * source's test split is only used for final numbers.
 */
import { Rng } from '../../model/rng.ts';

export const VALIDATION_FRACTION = 1 / 6;

export interface ValidationSplit {
  train: number[];
  validation: number[];
}

export function validationSplit(size: number, seed = 0): ValidationSplit {
  const perm = Array.from(Rng.for(seed, 'validation-split').permutation(size));
  const cut = size - Math.round(size * VALIDATION_FRACTION);
  return { train: perm.slice(0, cut).sort((a, b) => a - b), validation: perm.slice(cut).sort((a, b) => a - b) };
}
