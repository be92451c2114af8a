/**
 * Views of an image beyond the one I-JEPA masks. Objective `views` (LeJEPA's signal): every
 * image comes as several crops, each flipped and colour-augmented on its own, and the encoder
 * learns to give them one pooled embedding (the loader draws the views: data/item.ts, data/augment.ts).
 *
 * A second view for the target encoder (`augment.targetFlip`): the EMA encoder sees the image
 * mirrored half the time, so the predictor, which sees the unmirrored context, regresses tokens
 * of either view from the same input — a view-invariance signal (BYOL's asymmetry) added to
 * I-JEPA's masked prediction. The target tokens are read back at the mirrored positions, so
 * every target still describes the content the predictor was asked about.
 */
import type { Grid } from './masks.ts';

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
