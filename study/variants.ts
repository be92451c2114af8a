/**
 * The recipe study's variants (variants/*.json): one knob at a time on a base recipe, as data.
 * Unlike the product recipes they may change the architecture; their outcomes are in
 * docs/recipe-study.md.
 */
import { join } from 'node:path';
import { names, readRecipe } from '../train/recipes.ts';
import type { ConfigOverrides } from '../train/config.ts';

const DIR = join(import.meta.dirname, 'variants');

export const variantNames = names(DIR);

export function variantOverrides(name: string): ConfigOverrides {
  return readRecipe(DIR, name);
}
