/**
 * For `npm run bench:tokens` (bench/token-variance.ts): how the variance of patch tokens
 * x [B, N, D] (each layer-normalised first, as the targets are) splits over the batch: `position`
 * (the per-position mean across images), `image` (the per-image mean across positions) and
 * `residual` (what is specific to a patch of an image). Fractions of the total; they sum to 1.
 */
export function tokenVarianceShares(
  x: Float32Array,
  b: number,
  n: number,
  d: number,
  eps = 1e-6,
): { position: number; image: number; residual: number } {
  const t = new Float64Array(b * n * d);
  for (let k = 0; k < b * n; k++) {
    let mean = 0;
    for (let j = 0; j < d; j++) mean += x[k * d + j];
    mean /= d;
    let v = 0;
    for (let j = 0; j < d; j++) v += (x[k * d + j] - mean) ** 2;
    const inv = 1 / Math.sqrt(v / d + eps);
    for (let j = 0; j < d; j++) t[k * d + j] = (x[k * d + j] - mean) * inv;
  }
  const pos = new Float64Array(n * d);
  const img = new Float64Array(b * d);
  const all = new Float64Array(d);
  for (let i = 0; i < b; i++) {
    for (let p = 0; p < n; p++) {
      for (let j = 0; j < d; j++) {
        const v = t[(i * n + p) * d + j];
        pos[p * d + j] += v / b;
        img[i * d + j] += v / n;
        all[j] += v / (b * n);
      }
    }
  }
  let total = 0;
  for (let i = 0; i < b * n; i++) for (let j = 0; j < d; j++) total += (t[i * d + j] - all[j]) ** 2;
  let position = 0;
  for (let p = 0; p < n; p++) for (let j = 0; j < d; j++) position += b * (pos[p * d + j] - all[j]) ** 2;
  let image = 0;
  for (let i = 0; i < b; i++) for (let j = 0; j < d; j++) image += n * (img[i * d + j] - all[j]) ** 2;
  return { position: position / total, image: image / total, residual: 1 - (position + image) / total };
}
