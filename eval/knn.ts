/**
 * Temperature-weighted cosine kNN (Wu et al. 2018): each query takes the k training rows of
 * highest cosine similarity, and each votes exp(sim / T) for its class. The similarities are one
 * onnxruntime matrix product per block of queries (10k × 20k × 3,072 pixel values is 6·10¹¹
 * multiply-adds); the k best are kept by insertion, ties going to the earlier training row.
 */
import { GraphBuilder } from '../onnx/graph.ts';
import { createSession, Tensor } from '../runtime/session.ts';

export interface KnnData {
  x: Float32Array;
  y: Int32Array;
  n: number;
}

/** Rows scaled to unit length (zero rows stay zero). */
function unitRows(x: Float32Array, n: number, d: number): Float32Array {
  const u = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let j = 0; j < d; j++) s += x[i * d + j] ** 2;
    const inv = 1 / Math.max(Math.sqrt(s), 1e-12);
    for (let j = 0; j < d; j++) u[i * d + j] = x[i * d + j] * inv;
  }
  return u;
}

/** Similarities held at once: a block of queries × every training row. */
const BLOCK_VALUES = 1 << 24;

export async function knnPredict(
  tr: KnnData,
  te: KnnData,
  d: number,
  classes: number,
  k: number,
  temperature: number,
  o: { threads?: number; blockValues?: number } = {},
): Promise<Int32Array> {
  const kk = Math.min(k, tr.n);
  const a = unitRows(tr.x, tr.n, d);
  const b = unitRows(te.x, te.n, d);
  const g = new GraphBuilder('cosine_similarities');
  const q = g.input('q', 'float32', ['m', d]);
  const t = g.input('t', 'float32', ['n', d]);
  g.output(g.op('MatMul', [q, g.op('Transpose', [t], { perm: [1, 0] })]), 'sims', 'float32', ['m', 'n']);
  const session = await createSession(g.toBytes(), { threads: o.threads });
  const pred = new Int32Array(te.n);
  const topSim = new Float32Array(kk);
  const topIdx = new Int32Array(kk);
  const votes = new Float64Array(classes);
  const block = Math.max(1, Math.floor((o.blockValues ?? BLOCK_VALUES) / Math.max(1, tr.n)));
  const train = new Tensor('float32', a, [tr.n, d]);
  try {
    for (let from = 0; from < te.n; from += block) {
      const m = Math.min(block, te.n - from);
      const out = await session.run({
        q: new Tensor('float32', b.subarray(from * d, (from + m) * d), [m, d]),
        t: train,
      });
      const sims = out.sims.data as Float32Array;
      for (let r = 0; r < m; r++) {
        let filled = 0;
        for (let i = 0; i < tr.n; i++) {
          const s = sims[r * tr.n + i];
          if (filled === kk && s <= topSim[kk - 1]) continue;
          let j = filled < kk ? filled++ : kk - 1;
          while (j > 0 && topSim[j - 1] < s) {
            topSim[j] = topSim[j - 1];
            topIdx[j] = topIdx[j - 1];
            j--;
          }
          topSim[j] = s;
          topIdx[j] = i;
        }
        votes.fill(0);
        for (let j = 0; j < filled; j++) votes[tr.y[topIdx[j]]] += Math.exp(topSim[j] / temperature);
        let best = 0;
        for (let c = 1; c < classes; c++) if (votes[c] > votes[best]) best = c;
        pred[from + r] = best;
      }
    }
  } finally {
    await session.release();
  }
  return pred;
}
