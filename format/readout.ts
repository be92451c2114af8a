/**
 * How a linear probe reads the encoder's patch embeddings: `mean` pools all patches into one
 * D-vector; `gridG` pools each cell of a G×G split of the patch grid and concatenates them (G²·D),
 * which keeps the layout that a single mean throws away (grid8 on an 8×8 grid: every patch). Shared by the trainer's probes
 * and the server's /v1/classify so both compute identical features.
 */
export const READOUTS = ['mean', 'grid2', 'grid4', 'grid8'] as const;
export type Readout = (typeof READOUTS)[number];

function cellsPerSide(r: Readout): number {
  return r === 'mean' ? 1 : Number(r.slice(4));
}

export function readoutDim(r: Readout, dim: number): number {
  return cellsPerSide(r) ** 2 * dim;
}

/** Whether every cell of the readout gets at least one patch of a rows×cols grid. */
export function readoutFits(r: Readout, rows: number, cols: number): boolean {
  return rows >= cellsPerSide(r) && cols >= cellsPerSide(r);
}

export function checkReadout(r: Readout, rows: number, cols: number): void {
  const g = cellsPerSide(r);
  if (!readoutFits(r, rows, cols))
    throw new Error(`readout ${r} needs a patch grid of at least ${g}×${g}, got ${rows}×${cols}`);
}

/** tokens [n, rows·cols, D] (raster order) → features [n, readoutDim]. */
export function readFeatures(
  r: Readout,
  tokens: Float32Array,
  n: number,
  rows: number,
  cols: number,
  dim: number,
): Float32Array {
  checkReadout(r, rows, cols);
  const g = cellsPerSide(r);
  // Patch (y, x) falls in cell (⌊y·g/rows⌋, ⌊x·g/cols⌋); each cell averages its own patches.
  const cellOf = new Int32Array(rows * cols);
  const count = new Float32Array(g * g);
  for (let y = 0; y < rows; y++) {
    for (let x = 0; x < cols; x++) {
      const c = Math.floor((y * g) / rows) * g + Math.floor((x * g) / cols);
      cellOf[y * cols + x] = c;
      count[c]++;
    }
  }
  const f = g * g * dim;
  const out = new Float32Array(n * f);
  const per = rows * cols * dim;
  for (let i = 0; i < n; i++) {
    for (let p = 0; p < rows * cols; p++) {
      const src = i * per + p * dim;
      const dst = i * f + cellOf[p] * dim;
      const w = 1 / count[cellOf[p]];
      for (let j = 0; j < dim; j++) out[dst + j] += tokens[src + j] * w;
    }
  }
  return out;
}
