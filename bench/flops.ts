/**
 * Matmul FLOPs of one I-JEPA step (2·m·n·k per product; elementwise work is not counted), for
 * reporting achieved GFLOP/s. Backward passes cost twice their forward.
 */
import type { MaskBatch } from '../train/masks.ts';
import type { ModelConfig } from '../model/presets.ts';

function blockFlops(tokens: number, width: number, mlpRatio: number): number {
  const linear = 2 * tokens * width * width * (4 + 2 * mlpRatio);
  const attention = 2 * 2 * tokens * tokens * width; // QKᵀ and AV over all heads
  return linear + attention;
}

export function stepFlops(m: ModelConfig, masks: MaskBatch): number {
  const n = (m.imageSize / m.patchSize) ** 2;
  const patchDim = m.patchSize * m.patchSize * m.channels;
  const embed = (tokens: number) => 2 * tokens * patchDim * m.dim;
  let fwd = 0;
  let trainFwd = 0;
  for (let b = 0; b < masks.batch; b++) {
    fwd += embed(n) + m.depth * blockFlops(n, m.dim, m.mlpRatio); // target encoder, no backward
    const ctx = masks.ctxCount[b];
    trainFwd += embed(n) + m.depth * blockFlops(ctx, m.dim, m.mlpRatio);
    const tokens = ctx + masks.tgtLen;
    trainFwd +=
      masks.numTargets *
      (2 * ctx * m.dim * m.predDim +
        m.predDepth * blockFlops(tokens, m.predDim, m.mlpRatio) +
        2 * masks.tgtLen * m.predDim * m.dim);
  }
  return fwd + 3 * trainFwd;
}
