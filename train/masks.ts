/**
 * Multi-block masking (I-JEPA): M target blocks share one size per batch; one context block
 * per image, with every target patch removed from it.
 *
 * Differences from the reference sampler, on purpose:
 * - a block's top-left corner ranges over [0, H - h] inclusive, so blocks reach the last row/column;
 * - a context left with fewer than `minKeep` patches falls back to "everything but the targets"
 *   after a bounded number of re-placements (the reference loops forever on small grids), and
 *   targets that leave fewer than `minKeep` patches in all are placed again;
 * - contexts of different lengths are padded to the longest with a key mask, not truncated to the
 *   shortest in raster order (which drops context and biases it towards the top rows).
 */
import type { Rng } from '../model/rng.ts';

export interface MaskConfig {
  numTargets: number;
  targetScale: [number, number];
  targetAspect: [number, number];
  contextScale: [number, number];
  contextAspect: [number, number];
  minKeep: number;
}

export const defaultMaskConfig: MaskConfig = {
  numTargets: 4,
  targetScale: [0.15, 0.2],
  targetAspect: [0.75, 1.5],
  contextScale: [0.85, 1.0],
  contextAspect: [1, 1],
  minKeep: 4,
};

export interface Grid {
  rows: number;
  cols: number;
}

export interface MaskBatch {
  batch: number;
  /** Longest context in the batch; shorter ones are padded up to it. */
  ctxLen: number;
  /** [batch, ctxLen] patch indices (raster order within the grid); padding repeats a real index. */
  ctxIdx: Int32Array;
  /** [batch, ctxLen] 1 for a real context token, 0 for padding. */
  ctxMask: Float32Array;
  /** Real context tokens per image. */
  ctxCount: Int32Array;
  numTargets: number;
  /** Patches per target block (identical for every block in the batch). */
  tgtLen: number;
  /** [numTargets, batch, tgtLen] patch indices. */
  tgtIdx: Int32Array;
}

export interface BlockSize {
  h: number;
  w: number;
}

/** Block height/width for a fraction `scale` of the grid at aspect ratio h/w = `aspect`. */
export function blockSize(grid: Grid, scale: number, aspect: number): BlockSize {
  const area = scale * grid.rows * grid.cols;
  const h = Math.round(Math.sqrt(area * aspect));
  const w = Math.round(Math.sqrt(area / aspect));
  return { h: Math.min(grid.rows, Math.max(1, h)), w: Math.min(grid.cols, Math.max(1, w)) };
}

/** Patch indices of an h×w block whose top-left corner is uniform over every valid position. */
export function placeBlock(rng: Rng, grid: Grid, size: BlockSize): number[] {
  const top = rng.int(grid.rows - size.h + 1);
  const left = rng.int(grid.cols - size.w + 1);
  const out: number[] = [];
  for (let r = top; r < top + size.h; r++) for (let c = left; c < left + size.w; c++) out.push(r * grid.cols + c);
  return out;
}

/**
 * Largest block area the target scale and aspect ranges can produce on this grid. Rounding makes
 * the area non-monotonic in the aspect (on 8×8, scale 0.2 gives 4×3 at both aspect ends and 4×4
 * near 1), so the ranges are scanned, not just their corners.
 */
function maxBlockArea(grid: Grid, scale: [number, number], aspect: [number, number]): number {
  const STEPS = 200;
  let worst = 0;
  for (let i = 0; i <= STEPS; i++) {
    for (let j = 0; j <= STEPS; j++) {
      const b = blockSize(
        grid,
        scale[0] + ((scale[1] - scale[0]) * i) / STEPS,
        aspect[0] + ((aspect[1] - aspect[0]) * j) / STEPS,
      );
      worst = Math.max(worst, b.h * b.w);
    }
  }
  return worst;
}

/**
 * Throws when no placement of the targets can leave `minKeep` context patches on this grid (even
 * all of them on one spot). Placements that cover more are drawn again (sampleMasks).
 */
export function validateMaskConfig(c: MaskConfig, grid: Grid): void {
  const left = grid.rows * grid.cols - maxBlockArea(grid, c.targetScale, c.targetAspect);
  if (left < c.minKeep) {
    throw new RangeError(
      `masking: a target block of up to ${c.targetScale[1]} of a ${grid.rows}x${grid.cols} grid ` +
        `can leave ${left} context patches, fewer than minKeep=${c.minKeep}`,
    );
  }
}

const MAX_CONTEXT_TRIES = 20;
const MAX_TARGET_DRAWS = 1000;

export function sampleMasks(rng: Rng, grid: Grid, batch: number, c: MaskConfig): MaskBatch {
  const n = grid.rows * grid.cols;
  const tgtSize = blockSize(grid, rng.uniform(...c.targetScale), rng.uniform(...c.targetAspect));
  const ctxSize = blockSize(grid, rng.uniform(...c.contextScale), rng.uniform(...c.contextAspect));
  const tgtLen = tgtSize.h * tgtSize.w;
  const tgtIdx = new Int32Array(c.numTargets * batch * tgtLen);
  const contexts: number[][] = [];
  const inTarget = new Uint8Array(n);

  for (let b = 0; b < batch; b++) {
    // Four 4×4 targets can tile an 8×8 grid and leave no context at all (a NaN loss under SIGReg's
    // masked mean): such a placement is drawn again. Other draws consume the generator as before.
    for (let draw = 0; ; draw++) {
      if (draw === MAX_TARGET_DRAWS) {
        throw new RangeError(
          `masking: ${MAX_TARGET_DRAWS} placements of ${c.numTargets} ${tgtSize.h}x${tgtSize.w} target blocks all left fewer than minKeep=${c.minKeep} context patches; lower numTargets or targetScale`,
        );
      }
      inTarget.fill(0);
      for (let m = 0; m < c.numTargets; m++) {
        const block = placeBlock(rng, grid, tgtSize);
        tgtIdx.set(block, (m * batch + b) * tgtLen);
        for (const p of block) inTarget[p] = 1;
      }
      if (n - inTarget.reduce((a, v) => a + v, 0) >= c.minKeep) break;
    }
    let ctx: number[] = [];
    for (let t = 0; t < MAX_CONTEXT_TRIES && ctx.length < c.minKeep; t++) {
      ctx = placeBlock(rng, grid, ctxSize).filter((p) => !inTarget[p]);
    }
    if (ctx.length < c.minKeep) {
      ctx = [];
      for (let p = 0; p < n; p++) if (!inTarget[p]) ctx.push(p);
    }
    contexts.push(ctx.sort((a, b2) => a - b2));
  }

  const ctxLen = Math.max(...contexts.map((x) => x.length));
  const ctxIdx = new Int32Array(batch * ctxLen);
  const ctxMask = new Float32Array(batch * ctxLen);
  const ctxCount = new Int32Array(batch);
  contexts.forEach((ctx, b) => {
    ctxCount[b] = ctx.length;
    for (let i = 0; i < ctxLen; i++) {
      const real = i < ctx.length;
      ctxIdx[b * ctxLen + i] = real ? ctx[i] : ctx[0];
      ctxMask[b * ctxLen + i] = real ? 1 : 0;
    }
  });
  return { batch, ctxLen, ctxIdx, ctxMask, ctxCount, numTargets: c.numTargets, tgtLen, tgtIdx };
}

/** Images [from, to) of a mask batch, with the context re-padded to the longest kept one. */
export function sliceMasks(m: MaskBatch, from: number, to: number): MaskBatch {
  const batch = to - from;
  const ctxCount = m.ctxCount.slice(from, to);
  const ctxLen = Math.max(...ctxCount);
  const ctxIdx = new Int32Array(batch * ctxLen);
  const ctxMask = new Float32Array(batch * ctxLen);
  for (let b = 0; b < batch; b++) {
    const src = (from + b) * m.ctxLen;
    for (let i = 0; i < ctxLen; i++) {
      const real = i < ctxCount[b];
      ctxIdx[b * ctxLen + i] = m.ctxIdx[src + (real ? i : 0)];
      ctxMask[b * ctxLen + i] = real ? 1 : 0;
    }
  }
  const tgtIdx = new Int32Array(m.numTargets * batch * m.tgtLen);
  for (let t = 0; t < m.numTargets; t++) {
    tgtIdx.set(m.tgtIdx.subarray((t * m.batch + from) * m.tgtLen, (t * m.batch + to) * m.tgtLen), t * batch * m.tgtLen);
  }
  return { batch, ctxLen, ctxIdx, ctxMask, ctxCount, numTargets: m.numTargets, tgtLen: m.tgtLen, tgtIdx };
}

/** The same masks with images reordered: image i of the result is image order[i] of m. */
export function permuteMasks(m: MaskBatch, order: number[]): MaskBatch {
  const ctxIdx = new Int32Array(m.ctxIdx.length);
  const ctxMask = new Float32Array(m.ctxMask.length);
  const ctxCount = new Int32Array(m.batch);
  const tgtIdx = new Int32Array(m.tgtIdx.length);
  order.forEach((src, i) => {
    ctxIdx.set(m.ctxIdx.subarray(src * m.ctxLen, (src + 1) * m.ctxLen), i * m.ctxLen);
    ctxMask.set(m.ctxMask.subarray(src * m.ctxLen, (src + 1) * m.ctxLen), i * m.ctxLen);
    ctxCount[i] = m.ctxCount[src];
    for (let t = 0; t < m.numTargets; t++) {
      const from = (t * m.batch + src) * m.tgtLen;
      tgtIdx.set(m.tgtIdx.subarray(from, from + m.tgtLen), (t * m.batch + i) * m.tgtLen);
    }
  });
  return { ...m, ctxIdx, ctxMask, ctxCount, tgtIdx };
}

/**
 * MAE's masking: each image keeps a uniformly random `1 − ratio` of its patches (the encoder's
 * context, no padding: every image keeps as many) and the rest is the one "target block" the
 * decoder fills in. Kept and masked patches are in raster order.
 */
export function sampleRandomMasks(rng: Rng, grid: Grid, batch: number, ratio: number): MaskBatch {
  const n = grid.rows * grid.cols;
  const ctxLen = Math.max(1, Math.min(n - 1, Math.round(n * (1 - ratio))));
  const tgtLen = n - ctxLen;
  const ctxIdx = new Int32Array(batch * ctxLen);
  const tgtIdx = new Int32Array(batch * tgtLen);
  for (let b = 0; b < batch; b++) {
    const order = rng.permutation(n);
    ctxIdx.set(order.subarray(0, ctxLen).sort(), b * ctxLen);
    tgtIdx.set(order.subarray(ctxLen).sort(), b * tgtLen);
  }
  return {
    batch,
    ctxLen,
    ctxIdx,
    ctxMask: new Float32Array(batch * ctxLen).fill(1),
    ctxCount: new Int32Array(batch).fill(ctxLen),
    numTargets: 1,
    tgtLen,
    tgtIdx,
  };
}
