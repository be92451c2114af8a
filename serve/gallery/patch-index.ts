/**
 * What the gallery needs from a vector index over patch embeddings: labelled unit vectors, added
 * and removed one image at a time, nearest labels by cosine, and a snapshot it can reload. HNSW
 * (hnsw.ts) is the one implementation; an index living outside the process would be another.
 */
export interface PatchIndex {
  /** Vectors stored, removed ones included until the index is rebuilt. */
  readonly stored: number;
  /** Adds rows of `vectors` ([n, dim], unit length) under `labels` (n of them, never reused). */
  add(vectors: Float32Array, labels: number[]): void;
  remove(labels: number[]): void;
  /** Labels of the (approximately) nearest live vectors, at most k; `breadth` trades recall for time. */
  search(query: Float32Array, k: number, breadth: number): number[];
  /** Writes the index to `path`; `loadSnapshot` of the same implementation reads it back. */
  save(path: string): void;
}
