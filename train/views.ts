/**
 * Views of an image beyond the one I-JEPA masks. Objective `views` (LeJEPA's signal): every
 * image comes as several crops, each flipped and colour-jittered on its own, and the encoder
 * learns to give them one pooled embedding (jitterRgb below; the loader draws the views).
 *
 * A second view for the target encoder (`augment.targetFlip`): the EMA encoder sees the image
 * mirrored half the time, so the predictor, which sees the unmirrored context, regresses tokens
 * of either view from the same input — a view-invariance signal (BYOL's asymmetry) added to
 * I-JEPA's masked prediction. The target tokens are read back at the mirrored positions, so
 * every target still describes the content the predictor was asked about.
 */
import type { Grid } from './masks.ts';
import type { Rng } from '../model/rng.ts';

export interface TargetView {
  /** [B, N, p·p·C] normalised patches of the view the target encoder sees. */
  patches: Float32Array;
  /** [B] 1 where the view is the mirrored image. */
  flipped: Uint8Array;
}

/** Raster patch index of the same content in the left-right mirrored grid. */
export function mirrorIndex(grid: Grid, i: number): number {
  const r = Math.floor(i / grid.cols);
  return r * grid.cols + (grid.cols - 1 - (i % grid.cols));
}

/**
 * Where each target patch of `tgtIdx` ([numTargets, batch, tgtLen], MaskBatch layout) sits in the
 * target view: mirrored for the flipped images, unchanged otherwise.
 */
export function targetViewIdx(
  tgtIdx: Int32Array,
  numTargets: number,
  batch: number,
  tgtLen: number,
  flipped: Uint8Array,
  grid: Grid,
): Int32Array {
  const out = Int32Array.from(tgtIdx);
  for (let t = 0; t < numTargets; t++) {
    for (let b = 0; b < batch; b++) {
      if (!flipped[b]) continue;
      const row = (t * batch + b) * tgtLen;
      for (let j = row; j < row + tgtLen; j++) out[j] = mirrorIndex(grid, tgtIdx[j]);
    }
  }
  return out;
}

/**
 * Colour jitter of an HWC RGB image in place, SimCLR's order: brightness, contrast (about the
 * mean grey), saturation (towards the pixel's grey), each factor uniform in 1 ± 0.8·strength.
 * Without it, views of a colour image agree by matching colour histograms alone.
 */
export function jitterRgb(rgb: Uint8Array, rng: Rng, strength: number): Uint8Array {
  if (strength === 0) return rgb;
  const f = () => rng.uniform(Math.max(0, 1 - 0.8 * strength), 1 + 0.8 * strength);
  const [bright, contrast, sat] = [f(), f(), f()];
  const n = rgb.length / 3;
  const px = new Float32Array(rgb.length);
  let grey = 0;
  for (let i = 0; i < rgb.length; i++) px[i] = rgb[i] * bright;
  for (let i = 0; i < n; i++) grey += 0.299 * px[3 * i] + 0.587 * px[3 * i + 1] + 0.114 * px[3 * i + 2];
  grey /= n;
  for (let i = 0; i < n; i++) {
    const o = 3 * i;
    for (let c = 0; c < 3; c++) px[o + c] = grey + contrast * (px[o + c] - grey);
    const g = 0.299 * px[o] + 0.587 * px[o + 1] + 0.114 * px[o + 2];
    for (let c = 0; c < 3; c++) rgb[o + c] = Math.min(255, Math.max(0, Math.round(g + sat * (px[o + c] - g))));
  }
  return rgb;
}
