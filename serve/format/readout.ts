/**
 * How a linear probe reads the encoder's patch embeddings: `mean` pools all patches into one
 * D-vector; `grid2` pools each quadrant of the patch grid and concatenates the four (4·D), which
 * keeps coarse layout that a single mean throws away. Shared by the trainer's probes and the
 * server's /v1/classify so both compute identical features.
 */
export const READOUTS = ['mean', 'grid2'] as const;
export type Readout = (typeof READOUTS)[number];

export function readoutDim(r: Readout, dim: number): number {
  return r === 'mean' ? dim : 4 * dim;
}

/** tokens [n, rows·cols, D] (raster order) → features [n, readoutDim]. */
export function readFeatures(r: Readout, tokens: Float32Array, n: number, rows: number, cols: number, dim: number): Float32Array {
  const f = readoutDim(r, dim);
  const out = new Float32Array(n * f);
  const per = rows * cols * dim;
  for (let i = 0; i < n; i++) {
    for (let y = 0; y < rows; y++) {
      for (let x = 0; x < cols; x++) {
        const top = y < rows / 2;
        const left = x < cols / 2;
        const cell = r === 'mean' ? 0 : (top ? 0 : 2) + (left ? 0 : 1);
        const count = r === 'mean'
          ? rows * cols
          : (top ? Math.ceil(rows / 2) : Math.floor(rows / 2)) * (left ? Math.ceil(cols / 2) : Math.floor(cols / 2));
        const src = i * per + (y * cols + x) * dim;
        const dst = i * f + cell * dim;
        for (let j = 0; j < dim; j++) out[dst + j] += tokens[src + j] / count;
      }
    }
  }
  return out;
}
