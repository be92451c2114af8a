/**
 * Named training recipes (recipes/*.json): config overrides on top of a preset's defaults, applied
 * before --config and flags. Architecture lives in presets only; a recipe never sets `model`.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { merge, type ConfigOverrides } from './config.ts';

export const recipeFileSchema = z
  .object({
    about: z.string(),
    /** Another recipe of the same folder whose overrides this one's are applied on top of. */
    extends: z.string().optional(),
    config: z.record(z.string(), z.unknown()).default({}),
  })
  .strict();

const DIR = join(import.meta.dirname, 'recipes');

/** The recipes a user picks from: `default`, `lejepa`, `hybrid`, `ijepa` and `reference` (the published I-JEPA). */
export const recipeNames = names(DIR);

export function names(dir: string): string[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .map((f) => f.slice(0, -5))
    .sort();
}

/** A recipe file's overrides, with its name recorded as the config's `recipe` (provenance). */
export function readRecipe(dir: string, name: string): ConfigOverrides {
  const known = names(dir);
  if (!known.includes(name)) throw new Error(`unknown recipe '${name}' (known: ${known.join(', ')})`);
  const path = join(dir, `${name}.json`);
  const parsed = recipeFileSchema.safeParse(JSON.parse(readFileSync(path, 'utf8')));
  if (!parsed.success)
    throw new Error(`${path}: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  const { extends: base, config } = parsed.data;
  if (base === name) throw new Error(`${path}: a recipe cannot extend itself`);
  const inherited = base ? readRecipe(dir, base) : {};
  return { ...merge(inherited, config as ConfigOverrides), recipe: name };
}

export function recipeOverrides(name: string): ConfigOverrides {
  const r = readRecipe(DIR, name);
  if (r.model) throw new Error(`recipe '${name}' sets the architecture (model); that belongs to a preset`);
  return r;
}
