/** The inference graphs of a model package, emitted from vit.ts through OnnxOps. */
import onnxProto from 'onnx-proto';
import { GraphBuilder } from './graph.ts';
import { OnnxOps, type ExternalParams } from './ops.ts';
import type { ModelConfig } from '../model/presets.ts';
import { gridOf } from '../model/presets.ts';
import { encode, encoderSpecs, predict } from '../model/vit.ts';
import type { ParamStore } from '../model/params.ts';

/**
 * Encoder: `images` [batch, 3, S, S] (normalised, CHW) → `tokens` [batch, N, D] (patch embeddings,
 * raster order over the grid) and `pooled` [batch, D] (their mean).
 */
export function encoderGraph(m: ModelConfig, weights: ParamStore): Uint8Array {
  const g = new GraphBuilder('ijepa_encoder');
  const ops = new OnnxOps(g, weights, m);
  const { rows, cols } = gridOf(m);
  const images = g.input('images', 'float32', ['batch', m.channels, m.imageSize, m.imageSize]);
  const tokens = encode(ops, m, ops.patchify(images, m.patchSize));
  g.output(tokens, 'tokens', 'float32', ['batch', rows * cols, m.dim]);
  g.output(g.op('ReduceMean', [tokens], { axes: [1], keepdims: 0 }), 'pooled', 'float32', ['batch', m.dim]);
  return g.toBytes('I-JEPA target encoder (EMA)');
}

/**
 * Predictor: `context` [batch, L, D] (encoder tokens of the kept patches), `ctx_idx` [batch, L]
 * (their patch indices), `key_mask` [batch, L + T] (1 = real token; the last T are the targets),
 * `tgt_idx` [batch, T] (patch indices to predict) → `pred` [batch, T, D].
 */
export function predictorGraph(m: ModelConfig, weights: ParamStore): Uint8Array {
  const g = new GraphBuilder('ijepa_predictor');
  const ops = new OnnxOps(g, weights, m);
  const context = g.input('context', 'float32', ['batch', 'ctx', m.dim]);
  const ctxIdx = g.input('ctx_idx', 'int64', ['batch', 'ctx']);
  const keyMask = g.input('key_mask', 'float32', ['batch', 'ctx_plus_tgt']);
  const tgtIdx = g.input('tgt_idx', 'int64', ['batch', 'tgt']);
  const pred = predict(ops, m, { context, ctxIdx, keyMask, tgtIdx, numTargets: 1 });
  g.output(pred, 'pred', 'float32', ['batch', 'tgt', m.dim]);
  return g.toBytes('I-JEPA predictor');
}

/**
 * The encoder on a selection of patches: `patches` [batch, N, p·p·C] (normalised, patch layout of
 * format/preprocess.ts), `ctx_idx` [batch, L] (int64), `ctx_mask` [batch, L] (1 = real) →
 * `context` [batch, L, D], what the predictor reads. Its tokens are what the encoder computes when
 * it sees only those patches (the training-time context encoder).
 */
export function contextEncoderGraph(m: ModelConfig, weights: ParamStore | ExternalParams): Uint8Array {
  const g = new GraphBuilder('ijepa_context_encoder');
  const ops = new OnnxOps(g, weights, m);
  const { rows, cols } = gridOf(m);
  const patches = g.input('patches', 'float32', ['batch', rows * cols, m.patchSize * m.patchSize * m.channels]);
  const idx = g.input('ctx_idx', 'int64', ['batch', 'ctx']);
  const mask = g.input('ctx_mask', 'float32', ['batch', 'ctx']);
  g.output(encode(ops, m, patches, { idx, mask }), 'context', 'float32', ['batch', 'ctx', m.dim]);
  return g.toBytes('I-JEPA context encoder');
}

/**
 * Where the encoder's weights are in an encoder graph file (encoderGraph's initializers): the
 * context encoder of a package reads them there (ONNX external data) instead of keeping a copy.
 */
export function weightsIn(encoder: Uint8Array, location: string, m: ModelConfig): ExternalParams {
  const model = onnxProto.onnx.ModelProto.decode(encoder);
  const at = new Map<string, { offset: number; length: number }>();
  for (const t of model.graph?.initializer ?? []) {
    const raw = t.rawData;
    if (!t.name || !raw?.length) continue;
    // The decoder's byte fields are views of the file: their position in it is the offset.
    const offset =
      raw.buffer === encoder.buffer ? raw.byteOffset - encoder.byteOffset : Buffer.from(encoder).indexOf(raw);
    at.set(t.name, { offset, length: raw.length });
  }
  return { location, specs: encoderSpecs(m), at };
}
