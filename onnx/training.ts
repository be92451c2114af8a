/**
 * The onnxruntime engine's graphs, emitted from the same vit.ts as export and TF.js training:
 * one I-JEPA step (EMA-target forward, context encoder + predictor forward, the loss, and the
 * backward pass from autodiff.ts), and a forward-only diagnostics graph. Weights are graph
 * inputs (`online/<name>`, `target/<name>`), gradients graph outputs (`grad/<name>`): the
 * optimizer and the EMA run outside, on the same ParamStores as the TF.js engine.
 */
import { GraphBuilder } from './graph.ts';
import { OnnxOps, type IndexInputs } from './ops.ts';
import { gradients } from './autodiff.ts';
import type { ModelConfig } from '../model/presets.ts';
import { gridOf } from '../model/presets.ts';
import {
  type ParamSpec,
  decode,
  decoderSpecs,
  pixelTargets,
  encode,
  encoderOutput,
  encoderSpecs,
  encoderStream,
  predict,
  predictorSpecs,
  project,
  projectorSpecs,
  type ViewGrid,
  targetTokens,
  targets,
  PROJECTOR_DIM,
} from '../model/vit.ts';
import { KNOTS, sigregKnots, type LossKind } from '../model/objective.ts';

export const ONLINE = 'online/';
export const TARGET = 'target/';
export const GRAD = 'grad/';
export const ACC = 'acc/';

/** Mean squared error, or smooth-L1 (β = 1) written as c·(d − c/2) with c = clip(d, −1, 1). */
export function lossNode(g: GraphBuilder, pred: string, target: string, kind: LossKind): string {
  const d = g.op('Sub', [pred, target]);
  const per =
    kind === 'mse'
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
  /** Host-computed token rows and tail positions (ops.ts IndexInputs). */
  indices: IndexInputs;
}

function stepInputs(g: GraphBuilder, m: ModelConfig): StepInputs {
  const { rows, cols } = gridOf(m);
  const patches = g.input('patches', 'float32', ['batch', rows * cols, m.patchSize * m.patchSize * m.channels]);
  const ctxIdx = g.input('ctx_idx', 'int64', ['batch', 'ctx']);
  const ctxMask = g.input('ctx_mask', 'float32', ['batch', 'ctx']);
  const keyMask = g.input('key_mask', 'float32', ['targets_x_batch', 'ctx_plus_tgt']);
  const tgtIdx = g.input('tgt_idx', 'int64', ['targets_x_batch', 'tgt']);
  const indices = {
    rows: {
      [ctxIdx]: g.input('ctx_rows', 'int64', ['batch', 'ctx', 1]),
      [tgtIdx]: g.input('tgt_rows', 'int64', ['targets_x_batch', 'tgt', 1]),
    },
    tail: { [tgtIdx]: g.input('tgt_tail', 'int64', ['tgt', 1]) },
  };
  return { patches, ctxIdx, ctxMask, keyMask, tgtIdx, indices };
}

/** The key-masked mean of the context tokens [B, L, D] → [B, D]: padding does not count. */
function maskedMean(g: GraphBuilder, context: string, ctxMask: string): string {
  const w = g.op('Unsqueeze', [ctxMask, g.ints([2])]);
  return g.op('Div', [
    g.op('ReduceSum', [g.op('Mul', [context, w]), g.ints([1])], { keepdims: 0 }),
    g.op('ReduceSum', [w, g.ints([1])], { keepdims: 0 }),
  ]);
}

/**
 * SIGReg (loss.ts) on embeddings [B, D]: projections on the `directions` input [D, P], Epps–Pulley
 * statistic against N(0, 1), averaged, times B. Written so that every broadcast falls on a
 * constant (autodiff.ts reduces only parameter broadcasts).
 */
function sigregOf(g: GraphBuilder, pooled: string, directions: string): string {
  const { t, gauss, weights } = sigregKnots();
  const proj = g.op('MatMul', [pooled, directions]); // [B, P]
  const projections = g.dims.get(directions)![1] as number;
  const tx = g.op('Reshape', [
    g.op('MatMul', [
      g.initializer(g.fresh('sigreg_t'), Float32Array.from(t), [KNOTS, 1]),
      g.op('Reshape', [proj, g.ints([1, -1])]),
    ]),
    g.ints([KNOTS, -1, projections]),
  ]); // [K, B, P]
  const re = g.op('ReduceMean', [g.op('Cos', [tx])], { axes: [1], keepdims: 0 });
  const im = g.op('ReduceMean', [g.op('Sin', [tx])], { axes: [1], keepdims: 0 });
  const d = g.op('Sub', [re, g.initializer(g.fresh('sigreg_gauss'), Float32Array.from(gauss), [KNOTS, 1])]);
  const err = g.op('Add', [g.op('Mul', [d, d]), g.op('Mul', [im, im])]); // [K, P]
  const integral = g.op(
    'ReduceSum',
    [g.op('Mul', [err, g.initializer(g.fresh('sigreg_w'), Float32Array.from(weights), [KNOTS, 1])]), g.ints([0])],
    { keepdims: 0 },
  );
  // B as a float, counted on the device (a Cast of the int64 shape runs on the host under WebGPU).
  const n = g.op('ReduceSum', [g.op('Expand', [g.scalar(1), g.op('Shape', [proj], { start: 0, end: 1 })])], {
    keepdims: 0,
  });
  return g.op('Mul', [g.op('ReduceMean', [integral], { keepdims: 0 }), n]);
}

/** A training step's outputs, as the engine fetches them: the loss, its parts, and `grad/<name>` of every online parameter. */
function stepOutputs(
  g: GraphBuilder,
  parts: { loss: string; predLoss: string; sigreg: string },
  specs: ParamSpec[],
  doc: string,
  accumulate = false,
): Uint8Array {
  g.output(parts.loss, 'loss', 'float32', []);
  g.output(parts.predLoss, 'pred_loss', 'float32', []);
  g.output(parts.sigreg, 'sigreg', 'float32', []);
  const grads = gradients(
    g,
    parts.loss,
    specs.map((s) => ONLINE + s.name),
  );
  // Accumulating: `grad/<name>` = `acc/<name>` + grad_scale · gradient, so a device-resident run
  // needs no separate pass to sum micro-batches.
  const scale = accumulate ? g.input('grad_scale', 'float32', []) : '';
  for (const s of specs) {
    let grad = grads.get(ONLINE + s.name)!;
    if (accumulate) grad = g.op('Add', [g.input(ACC + s.name, 'float32', s.shape), g.op('Mul', [grad, scale])]);
    g.output(grad, GRAD + s.name, 'float32', s.shape);
  }
  return g.toBytes(doc);
}

export interface StepGraphOptions {
  /** SIGReg weight and number of random projections (fed per step as `directions`). */
  sigreg?: { weight: number; projections: number };
  /** Top target-encoder blocks the targets average (default 1). */
  targetLayers?: number;
  /** The target encoder reads its own view (`target_patches`, targets at `tgt_src_rows`; views.ts). */
  targetView?: boolean;
  /** Inputs `acc/<name>` and `grad_scale`; outputs the running sum acc + grad_scale · gradient. */
  accumulate?: boolean;
  /**
   * Objective `hybrid`: the batch is the global views of each image (image-major), and LeJEPA's
   * loss (weight λ = sigreg.weight) on their pooled context and the `locals` is added to the
   * prediction loss.
   */
  views?: ViewLayout;
}

/**
 * One training step on a micro-batch: inputs `patches`, `ctx_idx`, `ctx_mask`, `key_mask`,
 * `tgt_idx` and their token rows (`ctx_rows`, `tgt_rows`, `tgt_tail`; train/ort/feeds.ts builds
 * them; `directions` [D, P] with SIGReg; `target_patches` and `tgt_src_rows` with a target view),
 * the online and target weights → `loss`, `pred_loss`, `sigreg` and the gradient of every online
 * parameter.
 */
export function stepGraph(m: ModelConfig, numTargets: number, loss: LossKind, o: StepGraphOptions = {}): Uint8Array {
  const g = new GraphBuilder('ijepa_train_step');
  const specs = [...encoderSpecs(m), ...predictorSpecs(m), ...(o.views ? projectorSpecs(m) : [])];
  const x = stepInputs(g, m);
  const { rows, cols } = gridOf(m);
  // With a target view, the targets are read at their mirrored positions: only their rows are fed
  // (`tgt_src_rows`), under a key of their own.
  const view = o.targetView
    ? {
        patches: g.input('target_patches', 'float32', ['batch', rows * cols, m.patchSize * m.patchSize * m.channels]),
        idx: 'tgt_src',
      }
    : { patches: x.patches, idx: x.tgtIdx };
  if (o.targetView) x.indices.rows.tgt_src = g.input('tgt_src_rows', 'int64', ['targets_x_batch', 'tgt', 1]);
  const online = new OnnxOps(g, { prefix: ONLINE, specs }, m, x.indices);
  const target = new OnnxOps(g, { prefix: TARGET, specs: encoderSpecs(m) }, m, x.indices);
  const stream = encoderStream(target, m, view.patches);
  const tgt = targets(
    target,
    targetTokens(target, m, stream, encoderOutput(target, m, stream), o.targetLayers ?? 1),
    view.idx,
    numTargets,
  );
  const context = encode(online, m, x.patches, { idx: x.ctxIdx, mask: x.ctxMask });
  const pred = predict(online, m, { context, ctxIdx: x.ctxIdx, keyMask: x.keyMask, tgtIdx: x.tgtIdx, numTargets });
  const predLoss = lossNode(g, pred, tgt, loss);
  let value = predLoss;
  let reg = g.scalar(0);
  if (o.views && o.sigreg) {
    const directions = g.input('directions', 'float32', [PROJECTOR_DIM, o.sigreg.projections]);
    const locals = localsInput(g, m, o.views);
    const pooled = {
      globals: maskedMean(g, context, x.ctxMask),
      ...(locals ? { locals: pool(g, encode(online, m, locals, undefined, o.views.localGrid)) } : {}),
    };
    const parts = lejepaLoss(g, online, pooled, o.views, o.sigreg.weight, directions);
    reg = parts.sigreg;
    value = g.op('Add', [predLoss, parts.loss]);
  } else if (o.sigreg && o.sigreg.weight > 0) {
    const directions = g.input('directions', 'float32', [m.dim, o.sigreg.projections]);
    reg = sigregOf(g, maskedMean(g, context, x.ctxMask), directions);
    value = g.op('Add', [predLoss, g.op('Mul', [reg, g.scalar(o.sigreg.weight)])]);
  }
  return stepOutputs(
    g,
    { loss: value, predLoss, sigreg: reg },
    specs,
    'I-JEPA training step (forward + backward)',
    o.accumulate,
  );
}

/** The views of each image a LeJEPA step reads: global ones at the model's grid, local ones on a coarser grid. */
export interface ViewLayout {
  globals: number;
  locals: number;
  /** The local views' patch grid. */
  localGrid: ViewGrid;
}

/**
 * LeJEPA's loss on the views' pooled embeddings: global `pooled` [B·Vg, D] and local [B·Vl, D]
 * (image-major) are projected together (the projector's BatchNorm sees every view of the batch),
 * then, as LeJEPA's Algorithm 1: invariance = the mean squared distance of every view's projection
 * from the mean of the image's global views' projections; SIGReg per view, averaged over views;
 * loss (1 − λ)·invariance + λ·SIGReg.
 */
function lejepaLoss(
  g: GraphBuilder,
  online: OnnxOps,
  pooled: { globals: string; locals?: string },
  layout: ViewLayout,
  lambda: number,
  directions: string,
): { loss: string; invariance: string; sigreg: string } {
  const K = PROJECTOR_DIM;
  const both = pooled.locals ? g.op('Concat', [pooled.globals, pooled.locals], { axis: 0 }) : pooled.globals;
  const z = project(online, both);
  // The cut between global and local rows, fed from the host (an int64 Concat of shapes would run on the host under WebGPU).
  const [zg, zl] = pooled.locals ? g.node('Split', [z, g.input('view_split', 'int64', [2])], { axis: 0 }, 2) : [z];
  const perView = (t: string, n: number) =>
    n === 1
      ? [g.op('Reshape', [t, g.ints([-1, 1, K])])]
      : g.node('Split', [g.op('Reshape', [t, g.ints([-1, n, K])]), g.ints(Array(n).fill(1))], { axis: 1 }, n); // n × [B, 1, K]
  const globals = perView(zg, layout.globals);
  const views = zl ? [...globals, ...perView(zl, layout.locals)] : globals;
  const mean = (xs: string[]) => g.op('Mul', [xs.reduce((a, b) => g.op('Add', [a, b])), g.scalar(1 / xs.length)]);
  // Written per view, without broadcasting an activation (which autodiff.ts refuses).
  const centre = mean(globals);
  const invariance = mean(
    views.map((zv) => {
      const d = g.op('Sub', [zv, centre]);
      return g.op('ReduceMean', [g.op('Mul', [d, d])], { keepdims: 0 });
    }),
  );
  // SIGReg per view, as LeJEPA: over all views at once, an image's agreeing views would form a
  // cluster that the test against N(0, 1) pushes apart, working against the invariance.
  const sigreg = mean(views.map((zv) => sigregOf(g, g.op('Reshape', [zv, g.ints([-1, K])]), directions)));
  const loss = g.op('Add', [g.op('Mul', [invariance, g.scalar(1 - lambda)]), g.op('Mul', [sigreg, g.scalar(lambda)])]);
  return { loss, invariance, sigreg };
}

/** Mean over tokens: [B, N, D] → [B, D]. */
function pool(g: GraphBuilder, tokens: string): string {
  return g.op('ReduceMean', [tokens], { axes: [1], keepdims: 0 });
}

/** The local views' input `locals` [B·Vl, n, p·p·C], with local views. */
function localsInput(g: GraphBuilder, m: ModelConfig, layout: ViewLayout): string | undefined {
  if (!layout.locals) return undefined;
  const { rows, cols } = layout.localGrid;
  return g.input('locals', 'float32', ['batch_x_locals', rows * cols, m.patchSize * m.patchSize * m.channels]);
}

/**
 * One LeJEPA step on a micro-batch (no predictor, no teacher): inputs `views`, `locals` and
 * `view_split` (with local views: their rows and the local views' [B·Vg, B·Vl]), the online encoder and projector weights and `directions`
 * [PROJECTOR_DIM, P] → `loss`, `pred_loss` (the invariance term), `sigreg` and the gradient of
 * every online parameter. `sigreg.weight` is LeJEPA's λ.
 */
export function lejepaGraph(
  m: ModelConfig,
  layout: ViewLayout,
  sigreg: { weight: number; projections: number },
  o: Pick<StepGraphOptions, 'accumulate'> = {},
): Uint8Array {
  const g = new GraphBuilder('lejepa_train_step');
  const specs = [...encoderSpecs(m), ...projectorSpecs(m)];
  const online = new OnnxOps(g, { prefix: ONLINE, specs }, m);
  const { rows, cols } = gridOf(m);
  const views = g.input('views', 'float32', ['batch_x_views', rows * cols, m.patchSize * m.patchSize * m.channels]);
  const locals = localsInput(g, m, layout);
  const directions = g.input('directions', 'float32', [PROJECTOR_DIM, sigreg.projections]);
  const pooled = {
    globals: pool(g, encode(online, m, views)),
    ...(locals ? { locals: pool(g, encode(online, m, locals, undefined, layout.localGrid)) } : {}),
  };
  const parts = lejepaLoss(g, online, pooled, layout, sigreg.weight, directions);
  return stepOutputs(
    g,
    { loss: parts.loss, predLoss: parts.invariance, sigreg: parts.sigreg },
    specs,
    'LeJEPA training step (forward + backward)',
    o.accumulate,
  );
}

/**
 * One MAE step on a micro-batch (no teacher): the I-JEPA step's inputs with one "target block",
 * the masked patches (train/masks.ts sampleRandomMasks), the online encoder and decoder weights →
 * `loss` (= `pred_loss`: the mean squared error over the masked patches' normalised pixels, and
 * over nothing else), `sigreg` 0 and the gradient of every online parameter.
 */
export function maeGraph(m: ModelConfig, o: Pick<StepGraphOptions, 'accumulate'> = {}): Uint8Array {
  const g = new GraphBuilder('mae_train_step');
  const specs = [...encoderSpecs(m), ...decoderSpecs(m)];
  const x = stepInputs(g, m);
  const online = new OnnxOps(g, { prefix: ONLINE, specs }, m, x.indices);
  const visible = encode(online, m, x.patches, { idx: x.ctxIdx, mask: x.ctxMask });
  const pred = decode(online, m, { context: visible, ctxIdx: x.ctxIdx, keyMask: x.keyMask, tgtIdx: x.tgtIdx });
  const loss = lossNode(g, pred, pixelTargets(online, x.patches, x.tgtIdx), 'mse');
  return stepOutputs(
    g,
    { loss, predLoss: loss, sigreg: g.scalar(0) },
    specs,
    'MAE training step (forward + backward)',
    o.accumulate,
  );
}

/**
 * Diagnostics: target-encoder `tokens` [batch, N, D] (before the target norm), `pooled` [batch, D],
 * and `zero_loss`, the loss of predicting zeros for this batch's targets.
 */
export function probeGraph(m: ModelConfig, numTargets: number, loss: LossKind, targetLayers = 1): Uint8Array {
  const g = new GraphBuilder('ijepa_probe');
  const { rows, cols } = gridOf(m);
  const patches = g.input('patches', 'float32', ['batch', rows * cols, m.patchSize * m.patchSize * m.channels]);
  // Only the rows of the target tokens are fed; `tgt` is their key (ops.ts IndexInputs).
  const tgtIdx = 'tgt';
  const indices = { rows: { [tgtIdx]: g.input('tgt_rows', 'int64', ['targets_x_batch', 'tgt', 1]) }, tail: {} };
  const target = new OnnxOps(g, { prefix: TARGET, specs: encoderSpecs(m) }, m, indices);
  const stream = encoderStream(target, m, patches);
  const tokens = encoderOutput(target, m, stream);
  const tgt = targets(target, targetTokens(target, m, stream, tokens, targetLayers), tgtIdx, numTargets);
  g.output(tokens, 'tokens', 'float32', ['batch', rows * cols, m.dim]);
  g.output(pool(g, tokens), 'pooled', 'float32', ['batch', m.dim]);
  g.output(lossNode(g, g.op('Mul', [tgt, g.scalar(0)]), tgt, loss), 'zero_loss', 'float32', []);
  return g.toBytes('I-JEPA diagnostics');
}
