/**
 * The fine-tuning graphs: the encoder of model/vit.ts (the one model definition) on normalised CHW
 * images, the mean of its output tokens, a linear head. With `train`, soft targets (label smoothing
 * is applied on the host), the mean cross-entropy and the gradient of every parameter, encoder
 * included, from onnx/autodiff.ts; the optimizer runs outside, on one flat ParamStore.
 */
import { GraphBuilder } from '../onnx/graph.ts';
import { OnnxOps } from '../onnx/ops.ts';
import { gradients } from '../onnx/autodiff.ts';
import { GRAD, ONLINE } from '../onnx/training.ts';
import type { ModelConfig } from '../model/presets.ts';
import { encode, encoderSpecs, type ParamSpec } from '../model/vit.ts';

export const HEAD_W = 'head.w';
export const HEAD_B = 'head.b';
export const FEAT_MEAN = 'feat_mean';
export const FEAT_STD = 'feat_std';

/**
 * The classifier on the pooled embedding: weights drawn tiny (MAE's fine-tuning: trunc-normal,
 * std 2e-5) so the first steps' gradients reach the encoder through a head that barely favours
 * any class, bias zero.
 */
export function classifierSpecs(m: ModelConfig, classes: number): ParamSpec[] {
  return [
    { name: HEAD_W, shape: [m.dim, classes], init: { kind: 'trunc', std: 2e-5 }, decay: true },
    { name: HEAD_B, shape: [classes], init: { kind: 'zeros' }, decay: false },
  ];
}

/** Every parameter fine-tuning trains, in the order of its flat buffer: the encoder's, then the head's. */
export function finetuneSpecs(m: ModelConfig, classes: number): ParamSpec[] {
  return [...encoderSpecs(m), ...classifierSpecs(m, classes)];
}

/**
 * Inputs `images` [b, 3, S, S] (normalised CHW), `online/<name>` for every parameter and the
 * pooled embedding's fixed standardisation `feat_mean`, `feat_std` [D] → `logits` [b, C] and the
 * unstandardised `pooled` [b, D]; with `train`, also `targets` [b, C] (rows summing to one) →
 * `loss` (mean cross-entropy) and `grad/<name>` for every parameter.
 *
 * The head reads the pooled embedding standardised by statistics taken once, on the training
 * images before the first step (as the linear probe reads it): the token mean of a
 * layer-normalised encoder varies little between images (per-value spread ≈ 0.2 on CIFAR-10), so
 * an unstandardised head spends its first epochs on scale. Fixed, it is still a linear head,
 * which probe.json stores as its mean and std.
 */
export function finetuneGraph(m: ModelConfig, classes: number, train: boolean): Uint8Array {
  const g = new GraphBuilder(train ? 'finetune_step' : 'finetune_forward');
  const specs = finetuneSpecs(m, classes);
  const ops = new OnnxOps(g, { prefix: ONLINE, specs }, m);
  const images = g.input('images', 'float32', ['batch', m.channels, m.imageSize, m.imageSize]);
  const tokens = encode(ops, m, ops.patchify(images, m.patchSize));
  const pooled = g.op('ReduceMean', [tokens], { axes: [1], keepdims: 0 });
  const mean = g.input(FEAT_MEAN, 'float32', [m.dim]);
  const std = g.input(FEAT_STD, 'float32', [m.dim]);
  const logits = ops.linear(g.op('Div', [g.op('Sub', [pooled, mean]), std]), HEAD_W, HEAD_B);
  g.output(logits, 'logits', 'float32', ['batch', classes]);
  if (!train) g.output(pooled, 'pooled', 'float32', ['batch', m.dim]);
  if (!train) return g.toBytes('fine-tuning forward: encoder, mean pooling, linear head');
  const targets = g.input('targets', 'float32', ['batch', classes]);
  const ll = g.op('ReduceSum', [g.op('Mul', [targets, g.op('LogSoftmax', [logits], { axis: -1 })]), g.ints([1])], {
    keepdims: 0,
  });
  const loss = g.op('Neg', [g.op('ReduceMean', [ll], { keepdims: 0 })]);
  g.output(loss, 'loss', 'float32', []);
  const grads = gradients(
    g,
    loss,
    specs.map((s) => ONLINE + s.name),
  );
  for (const s of specs) g.output(grads.get(ONLINE + s.name)!, GRAD + s.name, 'float32', s.shape);
  return g.toBytes('fine-tuning step: loss, logits and the gradient of every parameter');
}
