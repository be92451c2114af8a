/**
 * Pixel augmentations of one view: pure functions on 8-bit HWC RGB (each returns a new array),
 * with torchvision's semantics on uint8 images, and the seeded draw that composes them per view.
 *
 * Blends are PIL's and torchvision's: `degenerate + f·(image − degenerate)`, clamped to [0, 255]
 * and truncated to an integer. Luma is ITU-R 601-2 (0.299, 0.587, 0.114) in PIL's fixed-point
 * form, rounded, so a grey pixel keeps its value (torchvision's float form turns white into 254).
 */
import type { Rng } from '../../model/rng.ts';

/** torchvision ColorJitter's strengths, applied with probability `p` (SimCLR's RandomApply). */
export interface ColorJitter {
  /** Factors uniform in [max(0, 1 − s), 1 + s]; 0: the op is left out. */
  brightness: number;
  contrast: number;
  saturation: number;
  /** Hue shift uniform in [−h, h] turns (h ≤ ½); 0: left out. */
  hue: number;
  p: number;
}

/** The colour ops of a view, each drawn on its own. */
export interface ColourOps {
  colorJitter?: ColorJitter | null;
  /** Probability of turning the view grey (3 equal channels). */
  grayscale?: number;
  /** Probability of solarizing the view (threshold 128). */
  solarize?: number;
}

/** ITU-R 601-2 luma of one pixel, rounded (PIL's convert('L')). */
export function luma(r: number, g: number, b: number): number {
  return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >>> 16;
}

function clampTrunc(v: number): number {
  return v <= 0 ? 0 : v >= 255 ? 255 : Math.trunc(v);
}

/** Left-right mirror of a size×size image. */
export function hflip(rgb: Uint8Array, size: number): Uint8Array {
  const out = new Uint8Array(rgb.length);
  for (let y = 0; y < size; y++)
    for (let x = 0; x < size; x++) {
      const s = 3 * (y * size + x);
      const d = 3 * (y * size + size - 1 - x);
      out[d] = rgb[s];
      out[d + 1] = rgb[s + 1];
      out[d + 2] = rgb[s + 2];
    }
  return out;
}

/** torchvision rgb_to_grayscale(num_output_channels=3). */
export function grayscale(rgb: Uint8Array): Uint8Array {
  const out = new Uint8Array(rgb.length);
  for (let o = 0; o < rgb.length; o += 3) out[o] = out[o + 1] = out[o + 2] = luma(rgb[o], rgb[o + 1], rgb[o + 2]);
  return out;
}

/** torchvision solarize: values ≥ threshold become 255 − v. */
export function solarize(rgb: Uint8Array, threshold = 128): Uint8Array {
  const out = new Uint8Array(rgb.length);
  for (let i = 0; i < rgb.length; i++) out[i] = rgb[i] >= threshold ? 255 - rgb[i] : rgb[i];
  return out;
}

/** torchvision adjust_brightness: a blend with black. */
export function adjustBrightness(rgb: Uint8Array, f: number): Uint8Array {
  const out = new Uint8Array(rgb.length);
  for (let i = 0; i < rgb.length; i++) out[i] = clampTrunc(f * rgb[i]);
  return out;
}

/** torchvision adjust_contrast: a blend with the image's mean luma. */
export function adjustContrast(rgb: Uint8Array, f: number): Uint8Array {
  let sum = 0;
  for (let o = 0; o < rgb.length; o += 3) sum += luma(rgb[o], rgb[o + 1], rgb[o + 2]);
  const mean = sum / (rgb.length / 3);
  const out = new Uint8Array(rgb.length);
  for (let i = 0; i < rgb.length; i++) out[i] = clampTrunc(mean + f * (rgb[i] - mean));
  return out;
}

/** torchvision adjust_saturation: a blend with each pixel's luma. */
export function adjustSaturation(rgb: Uint8Array, f: number): Uint8Array {
  const out = new Uint8Array(rgb.length);
  for (let o = 0; o < rgb.length; o += 3) {
    const g = luma(rgb[o], rgb[o + 1], rgb[o + 2]);
    for (let c = 0; c < 3; c++) out[o + c] = clampTrunc(g + f * (rgb[o + c] - g));
  }
  return out;
}

/**
 * torchvision adjust_hue: to HSV in [0, 1], hue rotated by `shift` turns (mod 1), back to RGB, and
 * to 8 bits as its convert_image_dtype does (×(256 − 10⁻³), truncated).
 */
export function adjustHue(rgb: Uint8Array, shift: number): Uint8Array {
  const out = new Uint8Array(rgb.length);
  const toByte = 256 - 1e-3;
  for (let o = 0; o < rgb.length; o += 3) {
    const r = rgb[o] / 255;
    const g = rgb[o + 1] / 255;
    const b = rgb[o + 2] / 255;
    const max = Math.max(r, g, b);
    const cr = max - Math.min(r, g, b);
    if (cr === 0) {
      // Grey: no hue to turn.
      out[o] = out[o + 1] = out[o + 2] = Math.trunc(max * toByte);
      continue;
    }
    const s = cr / max;
    const rc = (max - r) / cr;
    const gc = (max - g) / cr;
    const bc = (max - b) / cr;
    const h6 = max === r ? bc - gc : max === g ? 2 + rc - bc : 4 + gc - rc;
    let h = (h6 / 6 + 1) % 1;
    h = (((h + shift) % 1) + 1) % 1;
    const i = Math.floor(h * 6);
    const f = h * 6 - i;
    const v = max;
    const p = Math.min(1, Math.max(0, v * (1 - s)));
    const q = Math.min(1, Math.max(0, v * (1 - s * f)));
    const t = Math.min(1, Math.max(0, v * (1 - s * (1 - f))));
    let rr: number;
    let gg: number;
    let bb: number;
    switch (i % 6) {
      case 0:
        [rr, gg, bb] = [v, t, p];
        break;
      case 1:
        [rr, gg, bb] = [q, v, p];
        break;
      case 2:
        [rr, gg, bb] = [p, v, t];
        break;
      case 3:
        [rr, gg, bb] = [p, q, v];
        break;
      case 4:
        [rr, gg, bb] = [t, p, v];
        break;
      default:
        [rr, gg, bb] = [v, p, q];
    }
    out[o] = Math.trunc(rr * toByte);
    out[o + 1] = Math.trunc(gg * toByte);
    out[o + 2] = Math.trunc(bb * toByte);
  }
  return out;
}

/**
 * torchvision ColorJitter, seeded: the four ops in a random order, factors drawn in the order
 * brightness, contrast, saturation, hue (an op of strength 0 draws nothing and is left out).
 */
export function colorJitter(rgb: Uint8Array, rng: Rng, cj: ColorJitter): Uint8Array {
  const order = rng.permutation(4);
  const factor = (s: number) => (s > 0 ? rng.uniform(Math.max(0, 1 - s), 1 + s) : null);
  const b = factor(cj.brightness);
  const c = factor(cj.contrast);
  const s = factor(cj.saturation);
  const h = cj.hue > 0 ? rng.uniform(-cj.hue, cj.hue) : null;
  let out = rgb;
  for (const op of order) {
    if (op === 0 && b !== null) out = adjustBrightness(out, b);
    else if (op === 1 && c !== null) out = adjustContrast(out, c);
    else if (op === 2 && s !== null) out = adjustSaturation(out, s);
    else if (op === 3 && h !== null) out = adjustHue(out, h);
  }
  return out;
}

/**
 * A view's colour ops in BYOL's order: jitter (with its probability), grayscale, solarize. An op
 * not configured draws nothing, so adding one leaves every other draw of the stream as it was.
 */
export function colourView(rgb: Uint8Array, rng: Rng, ops: ColourOps): Uint8Array {
  let out = rgb;
  if (ops.colorJitter && rng.next() < ops.colorJitter.p) out = colorJitter(out, rng, ops.colorJitter);
  if (ops.grayscale && rng.next() < ops.grayscale) out = grayscale(out);
  if (ops.solarize && rng.next() < ops.solarize) out = solarize(out);
  return out;
}
