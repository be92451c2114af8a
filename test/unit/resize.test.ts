/** The views' crop-and-resize (train/data/resize.ts). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { coverCrop, resizeCrop } from '../../train/data/resize.ts';
import { defaultPreprocess, resizeRgb, type RgbImage } from '../../format/preprocess.ts';
import { Rng } from '../../model/rng.ts';

function image(w: number, h: number, at: (x: number, y: number, c: number) => number): RgbImage {
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) for (let c = 0; c < 3; c++) data[(y * w + x) * 3 + c] = at(x, y, c);
  return { data, width: w, height: h };
}

test('a crop at its own size is the pixels inside it; a flat image stays flat at any size', () => {
  const img = image(12, 10, (x, y, c) => (x * 19 + y * 7 + c * 50) % 256);
  const out = resizeCrop(img, { left: 3, top: 2, width: 6, height: 6 }, 6);
  for (let y = 0; y < 6; y++)
    for (let x = 0; x < 6; x++)
      for (let c = 0; c < 3; c++) assert.equal(out[(y * 6 + x) * 3 + c], img.data[((y + 2) * 12 + x + 3) * 3 + c]);
  const flat = image(9, 7, (_, __, c) => 40 + 60 * c);
  for (const size of [3, 8, 16]) {
    const o = resizeCrop(flat, { left: 1, top: 2, width: 5, height: 4 }, size);
    for (let i = 0; i < o.length; i++) assert.equal(o[i], 40 + 60 * (i % 3));
  }
});

test('upscaling keeps a ramp a ramp, pixel centres aligned: output x samples the crop at (x + ½)·w/size − ½', () => {
  // Catmull-Rom reproduces linear functions away from the edges.
  const ramp = image(8, 8, (x) => 50 + 20 * x);
  const out = resizeCrop(ramp, { left: 0, top: 0, width: 8, height: 8 }, 16);
  for (let x = 4; x < 12; x++)
    assert.equal(out[(5 * 16 + x) * 3], Math.round(50 + 20 * ((x + 0.5) / 2 - 0.5)), `x ${x}`);
});

test('reducing is antialiased: one-pixel stripes become grey; and agrees with sharp to about a level', async () => {
  const stripes = image(16, 16, (x) => (x % 2 ? 255 : 0));
  const out = resizeCrop(stripes, { left: 0, top: 0, width: 16, height: 16 }, 8);
  for (let x = 1; x < 7; x++) {
    const v = out[(4 * 8 + x) * 3];
    assert.ok(v > 115 && v < 140, `x ${x}: ${v}`);
  }
  const rng = Rng.for(4, 'img');
  const noise = image(24, 24, () => rng.int(256));
  const crop = { left: 0, top: 0, width: 24, height: 24 };
  const ours = resizeCrop(noise, crop, 10);
  const theirs = await resizeRgb(noise, defaultPreprocess(10), crop);
  let diff = 0;
  for (let i = 0; i < ours.length; i++) diff += Math.abs(ours[i] - theirs[i]);
  // Pure noise, a reduction by 2.4: the two kernels differ in their details by about a level.
  assert.ok(diff / ours.length < 1.5, `mean |ours − sharp| ${diff / ours.length}`);
});

test("cover: the centred square of a crop (sharp's fit for center-crop)", () => {
  assert.deepEqual(coverCrop({ left: 2, top: 3, width: 10, height: 4 }), { left: 5, top: 3, width: 4, height: 4 });
  assert.deepEqual(coverCrop({ left: 0, top: 1, width: 5, height: 8 }), { left: 0, top: 2, width: 5, height: 5 });
});
