/**
 * The onnxruntime engine's graphs, emitted from the same vit.ts as export and TF.js training:
 * one I-JEPA step (EMA-target forward, context encoder + predictor forward, the loss, and the
 * backward pass from autodiff.ts), and a forward-only diagnostics graph. Weights are graph
 * inputs (`online/<name>`, `target/<name>`), gradients graph outputs (`grad/<name>`): the
 * optimizer and the EMA run outside, on the same ParamStores as the TF.js engine.
 */
import { GraphBuilder } from './graph.ts';
import { OnnxOps } from './ops-onnx.ts';
import { gradients } from './autodiff.ts';
import type { ModelConfig } from '../model/presets.ts';
import { gridOf } from '../model/presets.ts';
import { encode, encoderSpecs, predict, predictorSpecs, targets } from '../model/vit.ts';
import type { LossKind } from '../loss.ts';
import type { ParamStore } from '../params.ts';

export const ONLINE = 'online/';
export const TARGET = 'target/';
export const GRAD = 'grad/';

/** Mean squared error, or smooth-L1 (β = 1) written as c·(d − c/2) with c = clip(d, −1, 1). */
export function lossNode(g: GraphBuilder, pred: string, target: string, kind: LossKind): string {
  const d = g.op('Sub', [pred, target]);
  const per = kind === 'mse'
    ? g.op('Mul', [d, d])
    : (() => {
      const c = g.op('Clip', [d, g.scalar(-1), g.scalar(1)]);
      return g.op('Mul', [c, g.op('Sub', [d, g.op('Mul', [c, g.scalar(0.5)])])]);
    })();
  return g.op('ReduceMean', [per], { keepdims: 0 });
}

interface StepInputs {
  patches: string;
  ctxIdx: string;
  ctxMask: string;
  keyMask: string;
  tgtIdx: string;
}

function stepInputs(g: GraphBuilder, m: ModelConfig): StepInputs;
function stepInputs(g: GraphBuilder, m: ModelConfig, contextOnly: true): Pick<StepInputs, 'patches' | 'ctxIdx' | 'ctxMask'>;
function stepInputs(g: GraphBuilder, m: ModelConfig, contextOnly = false): Partial<StepInputs> {
  const { rows, cols } = gridOf(m);
  const x: Partial<StepInputs> = {
    patches: g.input('patches', 'float32', ['batch', rows * cols, m.patchSize * m.patchSize * m.channels]),
    ctxIdx: g.input('ctx_idx', 'int64', ['batch', 'ctx']),
    ctxMask: g.input('ctx_mask', 'float32', ['batch', 'ctx']),
  };
  if (contextOnly) return x;
  x.keyMask = g.input('key_mask', 'float32', ['targets_x_batch', 'ctx_plus_tgt']);
  x.tgtIdx = g.input('tgt_idx', 'int64', ['targets_x_batch', 'tgt']);
  return x;
}

/**
 * One training step on a micro-batch: inputs `patches`, `ctx_idx`, `ctx_mask`, `key_mask`,
 * `tgt_idx` (as the TF.js engine builds them), the online and target weights → `loss` and the
 * gradient of every online parameter.
 */
export function stepGraph(m: ModelConfig, numTargets: number, loss: LossKind): Uint8Array {
  const g = new GraphBuilder('ijepa_train_step');
  const specs = [...encoderSpecs(m), ...predictorSpecs(m)];
  const online = new OnnxOps(g, { prefix: ONLINE, specs }, m);
  const target = new OnnxOps(g, { prefix: TARGET, specs: encoderSpecs(m) }, m);
  const x = stepInputs(g, m);
  const tgt = targets(target, m, encode(target, m, x.patches), x.tgtIdx, numTargets);
  const context = encode(online, m, x.patches, { idx: x.ctxIdx, mask: x.ctxMask });
  const pred = predict(online, m, { context, ctxIdx: x.ctxIdx, keyMask: x.keyMask, tgtIdx: x.tgtIdx, numTargets });
  const value = lossNode(g, pred, tgt, loss);
  g.output(value, 'loss', 'float32', []);
  const grads = gradients(g, value, specs.map((s) => ONLINE + s.name));
  for (const s of specs) g.output(grads.get(ONLINE + s.name)!, GRAD + s.name, 'float32', s.shape);
  return g.toBytes('I-JEPA training step (forward + backward)');
}

/**
 * Diagnostics: target-encoder `tokens` [batch, N, D] (before the target norm), `pooled` [batch, D],
 * and `zero_loss`, the loss of predicting zeros for this batch's targets.
 */
export function probeGraph(m: ModelConfig, numTargets: number, loss: LossKind): Uint8Array {
  const g = new GraphBuilder('ijepa_probe');
  const target = new OnnxOps(g, { prefix: TARGET, specs: encoderSpecs(m) }, m);
  const { rows, cols } = gridOf(m);
  const patches = g.input('patches', 'float32', ['batch', rows * cols, m.patchSize * m.patchSize * m.channels]);
  const tgtIdx = g.input('tgt_idx', 'int64', ['targets_x_batch', 'tgt']);
  const tokens = encode(target, m, patches);
  const tgt = targets(target, m, tokens, tgtIdx, numTargets);
  g.output(tokens, 'tokens', 'float32', ['batch', rows * cols, m.dim]);
  g.output(g.op('ReduceMean', [tokens], { axes: [1], keepdims: 0 }), 'pooled', 'float32', ['batch', m.dim]);
  g.output(lossNode(g, g.op('Mul', [tgt, g.scalar(0)]), tgt, loss), 'zero_loss', 'float32', []);
  return g.toBytes('I-JEPA diagnostics');
}

/**
 * The online (context) encoder on a selection of patches, weights as initializers: `patches`,
 * `ctx_idx`, `ctx_mask` → `context` [batch, ctx, D]. Used by the figures' predictor read-out.
 */
export function contextEncoderGraph(m: ModelConfig, online: ParamStore): Uint8Array {
  const g = new GraphBuilder('ijepa_context_encoder');
  const ops = new OnnxOps(g, online, m);
  const x = stepInputs(g, m, true);
  g.output(encode(ops, m, x.patches, { idx: x.ctxIdx, mask: x.ctxMask }), 'context', 'float32', ['batch', 'ctx', m.dim]);
  return g.toBytes('I-JEPA context encoder');
}
