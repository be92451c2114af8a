/**
 * Fixed 2-D sin-cos positional embeddings (MAE / I-JEPA `get_2d_sincos_pos_embed`, no class token):
 * half the channels encode the row, half the column. Returns [rows·cols, dim], row-major.
 */
export function sincos2d(dim: number, rows: number, cols: number): Float32Array {
  if (dim % 4 !== 0) throw new RangeError(`positional embedding dim must be divisible by 4, got ${dim}`);
  const half = dim / 2;
  const quarter = dim / 4;
  const out = new Float32Array(rows * cols * dim);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const base = (r * cols + c) * dim;
      for (let i = 0; i < quarter; i++) {
        const omega = 1 / 10000 ** (i / quarter);
        // The reference's meshgrid puts the column coordinate in the first half.
        out[base + i] = Math.sin(c * omega);
        out[base + quarter + i] = Math.cos(c * omega);
        out[base + half + i] = Math.sin(r * omega);
        out[base + half + quarter + i] = Math.cos(r * omega);
      }
    }
  }
  return out;
}
