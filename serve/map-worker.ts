/** A worker thread that lays out pooled embeddings [n, dim] in 2-D with UMAP (map.ts starts it). */
import { parentPort, workerData } from 'node:worker_threads';
import { UMAP } from 'umap-js';

const { pooled, dim } = workerData as { pooled: Float32Array; dim: number };
const n = pooled.length / dim;
const rows = Array.from({ length: n }, (_, i) => Array.from(pooled.subarray(i * dim, (i + 1) * dim)));
// Seeded, so the same gallery gives the same map.
let s = 12345;
const random = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
const umap = new UMAP({ nComponents: 2, nNeighbors: Math.min(15, n - 1), minDist: 0.1, random });
parentPort!.postMessage(umap.fit(rows));
