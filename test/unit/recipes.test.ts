import assert from 'node:assert/strict';
import { test } from 'node:test';
import { resolveConfig } from '../../train/config.ts';
import { presetNames, presets } from '../../model/presets.ts';
import { recipeNames, recipeOverrides } from '../../train/recipes.ts';
import { variantNames, variantOverrides } from '../../study/variants.ts';

test('the product recipes are few, valid on every preset, leave the architecture to the preset, and record their name', () => {
  assert.deepEqual(recipeNames, ['default', 'hybrid', 'ijepa', 'lejepa', 'mae', 'reference']);
  for (const name of recipeNames) {
    for (const preset of presetNames) {
      const c = resolveConfig(preset, recipeOverrides(name));
      assert.deepEqual(c.model, presets[preset], `${name} on ${preset}`);
      assert.equal(c.recipe, name);
    }
  }
  assert.throws(
    () => recipeOverrides('sigreg-strong'),
    /unknown recipe 'sigreg-strong' \(known: default, hybrid, ijepa, lejepa, mae, reference\)/,
  );
});

test('every study variant resolves to a valid config', () => {
  assert.ok(variantNames.length >= 20);
  for (const name of variantNames) assert.equal(resolveConfig('vit-tiny', variantOverrides(name)).recipe, name);
  assert.throws(() => variantOverrides('nonsense'), /unknown recipe 'nonsense'/);
});

test('`ijepa train --help` names every recipe', async () => {
  const { buildCli } = await import('../../cli/index.ts');
  const help = buildCli()
    .commands.find((c) => c.name() === 'train')!
    .helpInformation();
  for (const name of recipeNames) assert.match(help, new RegExp(`\\b${name}\\b`));
});

test('a recipe extending another gets its overrides under its own name, its own applied on top', async () => {
  const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { tmpdir } = await import('node:os');
  const { readRecipe } = await import('../../train/recipes.ts');
  const d = resolveConfig('vit-tiny', recipeOverrides('default'));
  assert.deepEqual({ ...d, recipe: 'lejepa' }, resolveConfig('vit-tiny', recipeOverrides('lejepa')));
  assert.equal(d.recipe, 'default');
  const dir = mkdtempSync(join(tmpdir(), 'recipes-'));
  try {
    writeFileSync(
      join(dir, 'a.json'),
      JSON.stringify({ about: 'a', config: { batch: 32, optim: { lr: 1, startLr: 0.5 } } }),
    );
    writeFileSync(join(dir, 'b.json'), JSON.stringify({ about: 'b', extends: 'a', config: { optim: { lr: 2 } } }));
    writeFileSync(join(dir, 'c.json'), JSON.stringify({ about: 'c', extends: 'c' }));
    assert.deepEqual(readRecipe(dir, 'b'), { batch: 32, optim: { lr: 2, startLr: 0.5 }, recipe: 'b' });
    assert.throws(() => readRecipe(dir, 'c'), /cannot extend itself/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
