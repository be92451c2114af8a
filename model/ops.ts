/**
 * The operations the ViT is written in. One model definition (vit.ts) runs on any implementation:
 * ONNX nodes for the training graphs and export (onnx/ops.ts), TF.js tensors for the reference engine
 * (train/tfjs/ops.ts).
 *
 * Shapes follow ONNX conventions so both implementations agree: in `reshape`, 0 copies the input
 * dimension and -1 is inferred; broadcasting is numpy-style.
 */
export interface Ops<T> {
  /** A trainable parameter, by name (see vit.ts `encoderSpecs`, `predictorSpecs`). */
  param(name: string): T;
  /** A fixed tensor (positional embeddings), cached by key. */
  constant(key: string, data: Float32Array, shape: number[]): T;

  /** x [..., in] · W [in, out] + b [out]. */
  linear(x: T, weight: string, bias: string): T;
  /** Normalise the last axis; affine parameters are optional (the target normalisation has none). */
  layerNorm(x: T, eps: number, gamma?: string, beta?: string): T;
  /**
   * Batch normalisation as in training, x [B, F] over the batch axis with the batch's own
   * statistics (biased variance), then the affine γ, β: the projector's, which never runs at
   * inference, so no running statistics are kept.
   */
  batchNorm(x: T, eps: number, gamma: string, beta: string): T;
  /** Exact GELU: 0.5·x·(1 + erf(x/√2)). */
  gelu(x: T): T;
  relu(x: T): T;
  softmax(x: T): T;
  add(a: T, b: T): T;
  scale(x: T, s: number): T;
  addScalar(x: T, s: number): T;
  /** Batched matrix product over leading axes, [..., m, k] · [..., k, n]. */
  matmul(a: T, b: T): T;
  reshape(x: T, shape: number[]): T;
  transpose(x: T, perm: number[]): T;
  concat(xs: T[], axis: number): T;
  /** Fused q|k|v projection [B, L, 3·H·hd] → q, k, v, each [B, H, L, hd]. */
  splitHeads(qkv: T, heads: number): [T, T, T];
  /** Attention heads [B, H, L, hd] → [B, L, H·hd]. */
  mergeHeads(x: T, heads: number): T;
  /** The last K tokens of x [B, N, D], where K = like.shape[1] (like: [B, K]). */
  lastTokens(x: T, like: T): T;
  /** Repeats x along axis 0, times-major: [B, ...] → [times·B, ...]. */
  repeatBatch(x: T, times: number): T;
  /** x [B, N, D], idx [B, K] (int) → [B, K, D]: per-image token selection. */
  gatherTokens(x: T, idx: T): T;
  /** table [N, D], idx [...] (int) → [..., D]. */
  gatherRows(table: T, idx: T): T;
  /** Images [B, C, H, W] → patches [B, (H/p)(W/p), p·p·C] in raster order, (row, col, channel) inside a patch. */
  patchify(images: T, patch: number): T;
}
