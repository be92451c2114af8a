/**
 * Crop-and-resize of a view in JavaScript. Through sharp a crop of a small image costs ~1 ms of
 * CPU, nearly all of it per call (a multi-crop item makes eight or more); this costs tens of
 * microseconds. Separable bicubic (Catmull-Rom, a = −½, sharp's `cubic` kernel) in PIL's form:
 * on a reduction the kernel widens by the factor, so the view is antialiased as sharp's is. Only
 * the crop's pixels are read (torchvision's resized_crop); taps past its edge are left out.
 */
import type { Crop, RgbImage } from '../../format/preprocess.ts';

function cubic(x: number): number {
  const a = -0.5;
  const t = Math.abs(x);
  if (t < 1) return ((a + 2) * t - (a + 3)) * t * t + 1;
  if (t < 2) return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a;
  return 0;
}

/** Taps of each output pixel along one axis: first source index, count, normalised weights. */
interface Taps {
  first: Int32Array;
  count: Int32Array;
  /** [out, width] weights, `width` the most taps of any pixel. */
  weights: Float64Array;
  width: number;
}

function taps(inSize: number, outSize: number): Taps {
  const scale = inSize / outSize;
  const widen = Math.max(scale, 1);
  const support = 2 * widen;
  const width = Math.ceil(support) * 2 + 1;
  const first = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weights = new Float64Array(outSize * width);
  for (let o = 0; o < outSize; o++) {
    const center = (o + 0.5) * scale;
    const lo = Math.max(0, Math.trunc(center - support + 0.5));
    const hi = Math.min(inSize, Math.trunc(center + support + 0.5));
    let sum = 0;
    for (let x = lo; x < hi; x++) sum += weights[o * width + x - lo] = cubic((x - center + 0.5) / widen);
    for (let x = lo; x < hi; x++) weights[o * width + x - lo] /= sum;
    first[o] = lo;
    count[o] = hi - lo;
  }
  return { first, count, weights, width };
}

/** `crop` of `img` resized to size×size (aspect ignored: the crop's own aspect was drawn), 8-bit HWC. */
export function resizeCrop(img: RgbImage, crop: Crop, size: number): Uint8Array {
  const { left, top, width: cw, height: ch } = crop;
  if (cw === size && ch === size && left === 0 && top === 0 && img.width === size && img.height === size)
    return img.data;
  const h = taps(cw, size);
  const v = taps(ch, size);
  // Rows first: the crop's rows resized horizontally, in floats.
  const mid = new Float64Array(ch * size * 3);
  for (let y = 0; y < ch; y++) {
    const row = ((top + y) * img.width + left) * 3;
    for (let o = 0; o < size; o++) {
      let r = 0;
      let g = 0;
      let b = 0;
      const w0 = o * h.width;
      const x0 = h.first[o];
      for (let k = 0; k < h.count[o]; k++) {
        const w = h.weights[w0 + k];
        const s = row + (x0 + k) * 3;
        r += w * img.data[s];
        g += w * img.data[s + 1];
        b += w * img.data[s + 2];
      }
      const d = (y * size + o) * 3;
      mid[d] = r;
      mid[d + 1] = g;
      mid[d + 2] = b;
    }
  }
  const out = new Uint8Array(size * size * 3);
  for (let o = 0; o < size; o++) {
    const w0 = o * v.width;
    const y0 = v.first[o];
    for (let x = 0; x < size * 3; x++) {
      let acc = 0;
      for (let k = 0; k < v.count[o]; k++) acc += v.weights[w0 + k] * mid[(y0 + k) * size * 3 + x];
      out[o * size * 3 + x] = acc <= 0 ? 0 : acc >= 255 ? 255 : Math.round(acc);
    }
  }
  return out;
}

/** sharp's `cover` fit: the centred part of `crop` with the target's (square) aspect. */
export function coverCrop(crop: Crop): Crop {
  const s = Math.min(crop.width, crop.height);
  return {
    left: crop.left + Math.floor((crop.width - s) / 2),
    top: crop.top + Math.floor((crop.height - s) / 2),
    width: s,
    height: s,
  };
}
