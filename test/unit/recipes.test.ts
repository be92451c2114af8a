import assert from 'node:assert/strict';
import { test } from 'node:test';
import { resolveConfig } from '../../train/config.ts';
import { presetNames, presets } from '../../model/presets.ts';
import { recipeNames, recipeOverrides } from '../../train/recipes.ts';
import { variantNames, variantOverrides } from '../../study/variants.ts';

test('the product recipes are few, valid on every preset, leave the architecture to the preset, and record their name', () => {
  assert.deepEqual(recipeNames, ['default', 'hybrid', 'lejepa', 'reference']);
  for (const name of recipeNames) {
    for (const preset of presetNames) {
      const c = resolveConfig(preset, recipeOverrides(name));
      assert.deepEqual(c.model, presets[preset], `${name} on ${preset}`);
      assert.equal(c.recipe, name);
    }
  }
  assert.throws(
    () => recipeOverrides('sigreg-strong'),
    /unknown recipe 'sigreg-strong' \(known: default, hybrid, lejepa, reference\)/,
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
