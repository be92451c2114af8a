/** The patch index as an HNSW graph (hnswlib-node, cosine): the only hnswlib-node import. */
import hnswlib from 'hnswlib-node';
import type { PatchIndex } from './patch-index.ts';

/**
 * HNSW search breadth by index size, from `npm run bench:serve` (recall@10 vs exact on clustered
 * 192-d vectors): 100k patches reach 0.998 at ef 128; 1M reach 0.986 at ef 256 (0.906 at 128).
 */
export function searchEf(patches: number): number {
  return patches <= 200_000 ? 128 : 256;
}

export class HnswIndex implements PatchIndex {
  private constructor(
    private readonly index: InstanceType<typeof hnswlib.HierarchicalNSW>,
    private readonly dim: number,
  ) {}

  static create(dim: number, capacity = 1024): HnswIndex {
    const index = new hnswlib.HierarchicalNSW('cosine', dim);
    index.initIndex(capacity, 16, 200, 100);
    return new HnswIndex(index, dim);
  }

  static load(path: string, dim: number): HnswIndex {
    const index = new hnswlib.HierarchicalNSW('cosine', dim);
    index.readIndexSync(path, true);
    return new HnswIndex(index, dim);
  }

  get stored(): number {
    return this.index.getCurrentCount();
  }

  add(vectors: Float32Array, labels: number[]): void {
    const n = labels.length;
    if (this.stored + n > this.index.getMaxElements())
      this.index.resizeIndex(Math.max(2 * this.index.getMaxElements(), this.stored + n));
    for (let p = 0; p < n; p++)
      this.index.addPoint(Array.from(vectors.subarray(p * this.dim, (p + 1) * this.dim)), labels[p]);
  }

  remove(labels: number[]): void {
    for (const l of labels) this.index.markDelete(l);
  }

  search(query: Float32Array, k: number, breadth: number): number[] {
    this.index.setEf(Math.max(breadth, k));
    return this.index.searchKnn(Array.from(query), k).neighbors;
  }

  save(path: string): void {
    this.index.writeIndexSync(path);
  }
}
