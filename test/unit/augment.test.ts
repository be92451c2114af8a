/**
 * The colour and flip ops of a view, each against values computed by hand from torchvision's
 * definitions, and the seeded draw that composes them.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  adjustBrightness,
  adjustContrast,
  adjustHue,
  adjustSaturation,
  colorJitter,
  colourView,
  grayscale,
  hflip,
  solarize,
} from '../../train/data/augment.ts';
import { Rng } from '../../model/rng.ts';

const px = (...v: number[]) => Uint8Array.from(v);

test('hue: a third of a turn takes red to green and green to blue; half a turn gives the complementary colour', () => {
  assert.deepEqual(adjustHue(px(255, 0, 0), 1 / 3), px(0, 255, 0));
  assert.deepEqual(adjustHue(px(0, 255, 0), 1 / 3), px(0, 0, 255));
  assert.deepEqual(adjustHue(px(255, 0, 0), -1 / 3), px(0, 0, 255));
  assert.deepEqual(adjustHue(px(255, 0, 0), 1 / 6), px(255, 255, 0));
  // (200, 100, 50): h = 1/18, s = 0.75, v = 200/255; h + ½ = 5/9 lies in sector 3, f = 1/3:
  // (p, q, v) = v·(0.25, 0.75, 1) = (50, 150, 200) / 255.
  assert.deepEqual(adjustHue(px(200, 100, 50), 0.5), px(50, 150, 200));
  // No shift and whole turns give the image back; greys have no hue.
  const img = px(200, 100, 50, 3, 250, 17, 90, 90, 90, 255, 255, 255);
  assert.deepEqual(adjustHue(img, 0), img);
  assert.deepEqual(adjustHue(img, 1), img);
  assert.deepEqual(adjustHue(px(90, 90, 90), 0.3), px(90, 90, 90));
});

test('grayscale: ITU-R 601-2 luma replicated to three channels; a grey pixel keeps its value', () => {
  // 0.299·255 = 76.2, 0.587·255 = 149.7, 0.114·255 = 29.1.
  assert.deepEqual(grayscale(px(255, 0, 0, 0, 255, 0, 0, 0, 255)), px(76, 76, 76, 150, 150, 150, 29, 29, 29));
  assert.deepEqual(grayscale(px(255, 255, 255, 37, 37, 37)), px(255, 255, 255, 37, 37, 37));
  // 0.299·200 + 0.587·100 + 0.114·50 = 124.2
  assert.deepEqual(grayscale(px(200, 100, 50)), px(124, 124, 124));
});

test('solarize: values at or above 128 are inverted', () => {
  assert.deepEqual(solarize(px(0, 127, 128, 200, 255, 1)), px(0, 127, 127, 55, 0, 1));
  assert.deepEqual(solarize(px(100, 200), 150), px(100, 55));
});

test('brightness, contrast, saturation: blends with black, the mean luma and the pixel luma, clamped and truncated', () => {
  assert.deepEqual(adjustBrightness(px(255, 100, 3), 0.5), px(127, 50, 1));
  assert.deepEqual(adjustBrightness(px(200, 100, 1), 1.5), px(255, 150, 1));
  // Mean luma of (100,100,100) and (200,200,200) is 150.
  const two = px(100, 100, 100, 200, 200, 200);
  assert.deepEqual(adjustContrast(two, 0.5), px(125, 125, 125, 175, 175, 175));
  assert.deepEqual(adjustContrast(two, 0), px(150, 150, 150, 150, 150, 150));
  assert.deepEqual(adjustContrast(two, 3), px(0, 0, 0, 255, 255, 255));
  // Luma of pure red is 76.
  assert.deepEqual(adjustSaturation(px(255, 0, 0), 0), px(76, 76, 76));
  assert.deepEqual(adjustSaturation(px(255, 0, 0), 0.5), px(165, 38, 38));
  assert.deepEqual(adjustSaturation(px(255, 0, 0), 2), px(255, 0, 0));
  assert.deepEqual(adjustSaturation(px(200, 100, 50), 1), px(200, 100, 50));
});

test('hflip mirrors each row; the ops leave their input untouched', () => {
  // 2×2: [a b; c d] → [b a; d c]
  const img = px(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12);
  assert.deepEqual(hflip(img, 2), px(4, 5, 6, 1, 2, 3, 10, 11, 12, 7, 8, 9));
  const copy = Uint8Array.from(img);
  for (const op of [
    () => adjustHue(img, 0.2),
    () => grayscale(img),
    () => solarize(img),
    () => adjustContrast(img, 0.3),
    () => hflip(img, 2),
  ])
    op();
  assert.deepEqual(img, copy);
});

test('colour jitter: seeded, factors in [1 − s, 1 + s], an op of strength 0 is left out', () => {
  const grey = new Uint8Array(3 * 16).fill(100);
  const brightOnly = { brightness: 0.5, contrast: 0, saturation: 0, hue: 0, p: 1 };
  const seen = new Set<number>();
  for (let seed = 0; seed < 64; seed++) {
    const out = colorJitter(grey, Rng.for(seed, 'cj'), brightOnly);
    assert.deepEqual(out, colorJitter(grey, Rng.for(seed, 'cj'), brightOnly));
    assert.ok(out.every((v) => v === out[0]));
    assert.ok(out[0] >= 50 && out[0] <= 150, `${out[0]}`);
    seen.add(out[0]);
  }
  assert.ok(Math.min(...seen) < 70 && Math.max(...seen) > 130, `${[...seen]}`);
  // Hue and saturation do nothing to a grey image; contrast does nothing to a flat one.
  const flatOnly = { brightness: 0, contrast: 0.8, saturation: 0.8, hue: 0.5, p: 1 };
  assert.deepEqual(colorJitter(grey, Rng.for(1, 'cj'), flatOnly), grey);
});

test("a view's colour ops: each drawn with its probability; ops not configured draw nothing", () => {
  const img = px(200, 100, 50, 30, 140, 250);
  const always = { colorJitter: null, grayscale: 1, solarize: 1 };
  assert.deepEqual(colourView(img, Rng.for(0, 'v'), always), solarize(grayscale(img)));
  const never = { colorJitter: { brightness: 0.5, contrast: 0.5, saturation: 0.5, hue: 0.2, p: 0 }, grayscale: 0 };
  assert.deepEqual(colourView(img, Rng.for(0, 'v'), never), img);
  for (const none of [{}, { colorJitter: null, grayscale: 0, solarize: 0 }]) {
    const rng = Rng.for(3, 'v');
    assert.deepEqual(colourView(img, rng, none), img);
    assert.equal(rng.next(), Rng.for(3, 'v').next(), 'no op configured, no draw');
  }
  // Grayscale with probability ½: about half of the views turn grey.
  let grey = 0;
  for (let i = 0; i < 200; i++) {
    const v = colourView(img, Rng.for(i, 'v'), { grayscale: 0.5 });
    if (v[0] === v[1]) grey++;
  }
  assert.ok(grey > 70 && grey < 130, `${grey} of 200`);
});
