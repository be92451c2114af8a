/**
 * Fixed 2-D sin-cos positional embeddings (MAE / I-JEPA `get_2d_sincos_pos_embed`, no class token):
 * half the channels encode the row, half the column. Returns [rows·cols, dim], row-major.
 *
 * With `span`, a coarser grid laid over the span's: cell i sits at (i + ½)·span/rows − ½ of the
 * span's coordinates, where resizing the span's table to rows × cols would put it. A low-resolution
 * view (a local crop) is thereby read as a whole image seen coarsely.
 */
export function sincos2d(
  dim: number,
  rows: number,
  cols: number,
  span: { rows: number; cols: number } = { rows, cols },
): Float32Array {
  if (dim % 4 !== 0) throw new RangeError(`positional embedding dim must be divisible by 4, got ${dim}`);
  const half = dim / 2;
  const quarter = dim / 4;
  const out = new Float32Array(rows * cols * dim);
  const at = (i: number, n: number, full: number) => ((i + 0.5) * full) / n - 0.5;
  for (let row = 0; row < rows; row++) {
    for (let col = 0; col < cols; col++) {
      const base = (row * cols + col) * dim;
      const r = at(row, rows, span.rows);
      const c = at(col, cols, span.cols);
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
