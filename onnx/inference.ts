/** The inference graphs of a model package, emitted from vit.ts through OnnxOps. */
import { GraphBuilder } from './graph.ts';
import { OnnxOps } from './ops.ts';
import type { ModelConfig } from '../model/presets.ts';
import { gridOf } from '../model/presets.ts';
import { encode, predict } from '../model/vit.ts';
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
