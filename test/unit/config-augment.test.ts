/** The `augment` block of the training config: defaults, validation, recipes, saved configs. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { baseConfig, parseConfig, resolveConfig } from '../../train/config.ts';
import { recipeOverrides } from '../../train/recipes.ts';

test('augment defaults: two global views, no local views, no colour ops', () => {
  const a = resolveConfig('vit-tiny').augment;
  assert.deepEqual(
    [a.views, a.localViews, a.localSize, a.localScale, a.colorJitter, a.grayscale, a.solarize],
    [2, 0, 16, [0.05, 0.3], null, 0, 0],
  );
});

test('augment validation: localSize a multiple of the patch and within the image; probabilities; no `jitter`', () => {
  // vit-tiny: 32 px images, 4 px patches.
  assert.equal(resolveConfig('vit-tiny', { augment: { localSize: 12, localViews: 4 } }).augment.localSize, 12);
  for (const localSize of [10, 36])
    assert.throws(
      () => resolveConfig('vit-tiny', { augment: { localSize } }),
      /augment\.localSize: augment\.localSize must be a multiple of the patch size and at most the image size/,
    );
  assert.throws(() => resolveConfig('vit-tiny', { augment: { grayscale: 1.5 } }), /augment\.grayscale/);
  const cj = { brightness: 0.4, contrast: 0.4, saturation: 0.2, hue: 0.6, p: 0.8 };
  assert.throws(() => resolveConfig('vit-tiny', { augment: { colorJitter: cj } }), /augment\.colorJitter\.hue/);
  assert.equal(
    resolveConfig('vit-tiny', { augment: { colorJitter: { ...cj, hue: 0.1 } } }).augment.colorJitter?.hue,
    0.1,
  );
  assert.throws(() => resolveConfig('vit-tiny', { augment: { jitter: 0.5 } } as never), /jitter/);
});

test("the lejepa recipe's colour ops", () => {
  const augment = recipeOverrides('lejepa').augment!;
  assert.equal('jitter' in augment, false);
  const a = resolveConfig('vit-tiny', { augment }).augment;
  assert.deepEqual(a.colorJitter, { brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.1, p: 0.8 });
  assert.deepEqual([a.grayscale, a.solarize], [0.2, 0.2]);
});

test('a saved config with `augment.jitter` s reads as colour jitter of strength 0.8·s, always applied', () => {
  const saved = (jitter: number) => {
    const c = baseConfig('vit-tiny');
    const { colorJitter, grayscale, solarize, localViews, localSize, localScale, ...old } = c.augment;
    return { ...c, augment: { ...old, jitter } };
  };
  assert.deepEqual(parseConfig(saved(0.5), 'ckpt').augment.colorJitter, {
    brightness: 0.4,
    contrast: 0.4,
    saturation: 0.4,
    hue: 0,
    p: 1,
  });
  assert.equal(parseConfig(saved(0), 'ckpt').augment.colorJitter, null);
});
