/** The patch index as an HNSW graph (hnswlib-node, cosine): the only hnswlib-node import. */
import hnswlib from 'hnswlib-node';
import type { PatchIndex } from './patch-index.ts';

/**
 * HNSW search breadth by index size: recall at a given ef falls as the index grows, so large
 * indexes search wider. Chosen from the recall@10 that `npm run bench:serve` measures (docs/api.md,
 * "Serving benchmark").
 */
export function searchEf(patches: number): number {
  return patches <= 200_000 ? 128 : 256;
}

/**
 * Removed labels are never hnswlib's markDelete: they are filtered out at search time instead.
 * hnswlib 0.8 (hnswlib-node 3) inserts by searching each layer from the nearest element the
 * descent reached; when every element reachable from there on that layer is marked deleted and the
 * entry point is not, the candidate list is empty and mutuallyConnectNewElement takes back() of an
 * empty vector (hnswalg.h:524): the insert continues from element 0 on a layer it does not have and
 * segfaults in searchBaseLayer (linkLists_[0] is null after readIndex). With no marks the search
 * always keeps its start element, so that cannot happen. The graph is what it would be had nothing
 * been removed; search visits removed elements as before and skips them as results.
 */
export class HnswIndex implements PatchIndex {
  /** removed[label] = 1 once removed. */
  private removed = new Uint8Array(1024);
  private removedCount = 0;

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
    // Snapshots of format 2 hold no delete marks (gallery.ts refuses older ones).
    index.readIndexSync(path);
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
    for (const l of labels) {
      if (l >= this.removed.length) {
        const grown = new Uint8Array(Math.max(2 * this.removed.length, l + 1));
        grown.set(this.removed);
        this.removed = grown;
      }
      if (!this.removed[l]) this.removedCount++;
      this.removed[l] = 1;
    }
  }

  search(query: Float32Array, k: number, breadth: number): number[] {
    this.index.setEf(Math.max(breadth, k));
    const removed = this.removed;
    const live = this.removedCount ? (l: number) => !removed[l] : undefined;
    return this.index.searchKnn(Array.from(query), k, live).neighbors;
  }

  save(path: string): void {
    this.index.writeIndexSync(path);
  }
}
