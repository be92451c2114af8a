/**
 * Collapse diagnostics, because JEPA training fails silently: the loss can fall while every
 * embedding converges to the same vector.
 */

/** Mean over dimensions of the per-dimension std of L2-normalised rows of x [n, d]. ≈ 1/√d when healthy, → 0 on collapse. */
export function normalizedFeatureStd(x: Float32Array, n: number, d: number): number {
  const mean = new Float64Array(d);
  const sq = new Float64Array(d);
  for (let i = 0; i < n; i++) {
    let norm = 0;
    for (let j = 0; j < d; j++) norm += x[i * d + j] ** 2;
    const inv = 1 / Math.max(Math.sqrt(norm), 1e-12);
    for (let j = 0; j < d; j++) {
      const v = x[i * d + j] * inv;
      mean[j] += v;
      sq[j] += v * v;
    }
  }
  let total = 0;
  for (let j = 0; j < d; j++) {
    const m = mean[j] / n;
    total += Math.sqrt(Math.max(0, sq[j] / n - m * m));
  }
  return total / d;
}

/** Eigenvalues of a symmetric matrix a [k, k] (row-major, overwritten) by cyclic Jacobi rotations. */
function symmetricEigenvalues(a: Float64Array, k: number): Float64Array {
  for (let sweep = 0; sweep < 50; sweep++) {
    let off = 0;
    for (let p = 0; p < k; p++) for (let q = p + 1; q < k; q++) off += a[p * k + q] ** 2;
    if (off < 1e-22) break;
    for (let p = 0; p < k; p++) {
      for (let q = p + 1; q < k; q++) {
        const apq = a[p * k + q];
        if (Math.abs(apq) < 1e-300) continue;
        const theta = (a[q * k + q] - a[p * k + p]) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let r = 0; r < k; r++) {
          const arp = a[r * k + p];
          const arq = a[r * k + q];
          a[r * k + p] = c * arp - s * arq;
          a[r * k + q] = s * arp + c * arq;
        }
        for (let r = 0; r < k; r++) {
          const apr = a[p * k + r];
          const aqr = a[q * k + r];
          a[p * k + r] = c * apr - s * aqr;
          a[q * k + r] = s * apr + c * aqr;
        }
      }
    }
  }
  return Float64Array.from({ length: k }, (_, i) => a[i * k + i]);
}

/**
 * RankMe (Garrido et al. 2023): exp of the entropy of the normalised singular values of x [n, d].
 * Ranges from 1 (collapsed) to min(n, d).
 */
export function rankMe(x: Float32Array, n: number, d: number): number {
  // Singular values² are the eigenvalues of the smaller Gram matrix.
  const k = Math.min(n, d);
  const g = new Float64Array(k * k);
  if (d <= n) {
    for (let i = 0; i < n; i++) {
      const row = i * d;
      for (let p = 0; p < d; p++) {
        const v = x[row + p];
        if (v === 0) continue;
        for (let q = p; q < d; q++) g[p * d + q] += v * x[row + q];
      }
    }
  } else {
    for (let i = 0; i < n; i++)
      for (let j = i; j < n; j++) {
        let s = 0;
        for (let c = 0; c < d; c++) s += x[i * d + c] * x[j * d + c];
        g[i * n + j] = s;
      }
  }
  for (let p = 0; p < k; p++) for (let q = p + 1; q < k; q++) g[q * k + p] = g[p * k + q];
  const sv = Array.from(symmetricEigenvalues(g, k), (e) => Math.sqrt(Math.max(e, 0)));
  const total = sv.reduce((a, b) => a + b, 0);
  if (total <= 0) return 0;
  let h = 0;
  for (const s of sv) {
    const p = s / total + 1e-7;
    h -= p * Math.log(p);
  }
  return Math.exp(h);
}

export interface Diagnostics {
  /** normalizedFeatureStd of target-encoder tokens, before the target layer norm. */
  featStd: number;
  /** 1/√d, the healthy value of featStd. */
  featStdHealthy: number;
  rankMe: number;
  emaGap: number;
  /** Loss of a predictor that always outputs zero, for comparison with the real loss. */
  zeroLoss: number;
}

/** A warning when the diagnostics look like collapse, else null. */
export function collapseWarning(d: Diagnostics, dim: number): string | null {
  const reasons: string[] = [];
  if (d.featStd < 0.2 * d.featStdHealthy)
    reasons.push(`feature std ${d.featStd.toFixed(4)} < 0.2/√d (${(0.2 * d.featStdHealthy).toFixed(4)})`);
  if (d.rankMe < Math.max(2, 0.02 * dim)) reasons.push(`RankMe ${d.rankMe.toFixed(1)} of ${dim}`);
  return reasons.length ? `COLLAPSE SUSPECTED: ${reasons.join('; ')}` : null;
}
