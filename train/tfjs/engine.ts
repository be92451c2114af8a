/**
 * The TF.js training engine: one I-JEPA forward/backward on a micro-batch.
 * Weights live in ParamStores (the source of truth, shared with the optimizer and checkpoints);
 * this engine mirrors them into TF.js variables after every optimizer step.
 */
import * as tf from '@tensorflow/tfjs-core';
import { gridOf, type ModelConfig } from '../../model/presets.ts';
import { TfOps } from './ops.ts';
import {
  decode,
  encode,
  encoderOutput,
  encoderStream,
  pixelTargets,
  predict,
  targetTokens,
  targets,
} from '../../model/vit.ts';
import type { ParamStore } from '../../model/params.ts';
import { sigregDirections, type LossKind } from '../../model/objective.ts';
import {
  chunksOf,
  predictorKeyMask,
  targetSourceIdx,
  HostEngine,
  type MicroBatch,
  type DiagnosticsOutput,
  type StepResult,
} from '../engine.ts';
import { predictionLoss, sigreg } from './loss.ts';

export interface EngineOptions {
  loss: LossKind;
  sigregWeight: number;
  sigregProjections: number;
  seed: number;
  /** Images per forward/backward pass inside a micro-batch (memory bound); default: all. */
  chunk?: number;
  /** Use the fused kernels of kernels.ts (default: when the backend has them). */
  fused?: boolean;
  /** Top target-encoder blocks the targets average (default 1: its output). */
  targetLayers?: number;
  /** Masked prediction of the target encoder's embeddings (default) or of the masked patches' pixels. */
  objective?: 'ijepa' | 'mae';
}

export class TfjsEngine extends HostEngine {
  private readonly vars = new Map<string, tf.Variable>();
  private readonly targetWeights = new Map<string, tf.Tensor>();
  private readonly constants = new Map<string, tf.Tensor>();
  private readonly onlineOps: TfOps;
  private readonly targetOps: TfOps;
  private readonly patchDim: number;
  private readonly numPatches: number;

  constructor(
    private readonly model: ModelConfig,
    online: ParamStore,
    target: ParamStore,
    private readonly opts: EngineOptions,
  ) {
    super(online, target);
    for (const s of online.specs)
      this.vars.set(s.name, tf.variable(tf.tensor(online.view(s.name), s.shape), true, `v/${s.name}`));
    this.onlineOps = new TfOps((n) => this.vars.get(n)!, this.constants, opts.fused);
    this.targetOps = new TfOps((n) => this.targetWeights.get(n)!, this.constants, opts.fused);
    this.syncTarget();
    this.patchDim = model.patchSize * model.patchSize * model.channels;
    this.numPatches = (model.imageSize / model.patchSize) ** 2;
  }

  protected override changed(): void {
    this.syncOnline();
    this.syncTarget();
  }

  /** Copies the online ParamStore into the variables (after an optimizer step). */
  private syncOnline(): void {
    for (const s of this.online.specs) {
      const t = tf.tensor(this.online.view(s.name), s.shape);
      this.vars.get(s.name)!.assign(t);
      t.dispose();
    }
  }

  /** Copies the target ParamStore into tensors (after an EMA update). */
  private syncTarget(): void {
    for (const s of this.target.specs) {
      this.targetWeights.get(s.name)?.dispose();
      this.targetWeights.set(s.name, tf.tensor(this.target.view(s.name), s.shape));
    }
  }

  private inputs(mb: MicroBatch) {
    const m = mb.masks;
    const shape: [number, number, number] = [mb.batch, this.numPatches, this.patchDim];
    const patches = tf.tensor3d(mb.patches, shape);
    const tgtIdx = tf.tensor2d(m.tgtIdx, [m.numTargets * m.batch, m.tgtLen], 'int32');
    return {
      patches,
      tgtIdx,
      // Without a target view the target encoder reads the same tensors (disposing twice is a no-op).
      targetPatches: mb.targetView ? tf.tensor3d(mb.targetView.patches, shape) : patches,
      tgtSrcIdx: mb.targetView
        ? tf.tensor2d(targetSourceIdx(mb, gridOf(this.model)), [m.numTargets * m.batch, m.tgtLen], 'int32')
        : tgtIdx,
      ctxIdx: tf.tensor2d(m.ctxIdx, [m.batch, m.ctxLen], 'int32'),
      ctxMask: tf.tensor2d(m.ctxMask, [m.batch, m.ctxLen]),
      keyMask: tf.tensor2d(predictorKeyMask(m), [m.numTargets * m.batch, m.ctxLen + m.tgtLen]),
    };
  }

  /**
   * Loss and gradients for one micro-batch. Gradients of the online parameters are *added* into
   * `gradAccum` (flat, ParamStore order), scaled by `gradScale`. The micro-batch runs in chunks of
   * `chunk` images (memory: the wasm heap is capped at 2-4 GB); every chunk has the same number of
   * target elements per image, so chunk means weighted by size equal the whole-batch mean.
   */
  forwardBackward(mb: MicroBatch, gradAccum: Float32Array, gradScale: number, step: number): StepResult {
    const chunk = this.opts.chunk ?? mb.batch;
    const total = { loss: 0, predLoss: 0, sigreg: 0 };
    for (const { part: c, weight } of chunksOf(mb, chunk, this.numPatches * this.patchDim)) {
      const part = this.chunkStep(c, gradAccum, gradScale * weight, step);
      total.loss += weight * part.loss;
      total.predLoss += weight * part.predLoss;
      total.sigreg += weight * part.sigreg;
    }
    return total;
  }

  private chunkStep(mb: MicroBatch, gradAccum: Float32Array, gradScale: number, step: number): StepResult {
    if (this.opts.objective === 'mae') return this.maeStep(mb, gradAccum, gradScale);
    const m = mb.masks;
    const x = this.inputs(mb);
    // Step 1: targets from the EMA encoder on the full image (or its target view), outside the gradient tape.
    const tgt = tf.tidy(() =>
      targets(this.targetOps, this.targetTokens(x.targetPatches).tokens, x.tgtSrcIdx, m.numTargets),
    );
    const { loss, predLoss, sig, grads } = tf.tidy(() => {
      let parts: { pred: tf.Scalar; sig: tf.Scalar } | null = null;
      const { value, grads } = tf.variableGrads(() => {
        // Step 2: context encoder on the kept patches; step 3: predictor at the target positions.
        const context = encode(this.onlineOps, this.model, x.patches, { idx: x.ctxIdx, mask: x.ctxMask });
        const pred = predict(this.onlineOps, this.model, {
          context,
          ctxIdx: x.ctxIdx,
          keyMask: x.keyMask,
          tgtIdx: x.tgtIdx,
          numTargets: m.numTargets,
        });
        const pl = predictionLoss(pred, tgt, this.opts.loss);
        let sigTerm = tf.scalar(0);
        if (this.opts.sigregWeight > 0) {
          const w = tf.expandDims(x.ctxMask, 2);
          const pooled = tf.div(tf.sum(tf.mul(context, w), 1), tf.sum(w, 1)) as tf.Tensor2D;
          sigTerm = sigreg(pooled, this.directions(step));
        }
        parts = { pred: tf.keep(pl), sig: tf.keep(sigTerm) };
        return tf.add(pl, tf.mul(sigTerm, this.opts.sigregWeight)) as tf.Scalar;
      }, [...this.vars.values()]);
      const p = parts as unknown as { pred: tf.Scalar; sig: tf.Scalar };
      return { loss: value, predLoss: p.pred, sig: p.sig, grads };
    });
    this.addGrads(grads, gradAccum, gradScale);
    const out = { loss: loss.dataSync()[0], predLoss: predLoss.dataSync()[0], sigreg: sig.dataSync()[0] };
    tf.dispose([loss, predLoss, sig, tgt, ...Object.values(x), ...Object.values(grads)]);
    return out;
  }

  /** MAE: the decoder's pixels of the masked patches against their normalised pixels; no teacher. */
  private maeStep(mb: MicroBatch, gradAccum: Float32Array, gradScale: number): StepResult {
    const x = this.inputs(mb);
    const { value, grads } = tf.tidy(() =>
      tf.variableGrads(() => {
        const visible = encode(this.onlineOps, this.model, x.patches, { idx: x.ctxIdx, mask: x.ctxMask });
        const pred = decode(this.onlineOps, this.model, {
          context: visible,
          ctxIdx: x.ctxIdx,
          keyMask: x.keyMask,
          tgtIdx: x.tgtIdx,
        });
        return predictionLoss(pred, pixelTargets(this.onlineOps, x.patches, x.tgtIdx), 'mse');
      }, [...this.vars.values()]),
    );
    this.addGrads(grads, gradAccum, gradScale);
    const loss = value.dataSync()[0];
    tf.dispose([value, ...Object.values(x), ...Object.values(grads)]);
    return { loss, predLoss: loss, sigreg: 0 };
  }

  private addGrads(grads: tf.NamedTensorMap, gradAccum: Float32Array, gradScale: number): void {
    for (const s of this.online.specs) {
      const data = grads[`v/${s.name}`].dataSync() as Float32Array;
      const off = this.online.offsets.get(s.name)!;
      for (let i = 0; i < data.length; i++) gradAccum[off + i] += gradScale * data[i];
    }
  }

  /** Target-encoder output tokens and the regression targets per patch, from one forward pass. */
  private targetTokens(patches: tf.Tensor): { output: tf.Tensor; tokens: tf.Tensor } {
    const stream = encoderStream(this.targetOps, this.model, patches);
    const output = encoderOutput(this.targetOps, this.model, stream);
    return { output, tokens: targetTokens(this.targetOps, this.model, stream, output, this.opts.targetLayers ?? 1) };
  }

  /** Random unit directions [D, P] for SIGReg, fresh each optimizer step. */
  private directions(step: number): tf.Tensor2D {
    const d = this.model.dim;
    const p = this.opts.sigregProjections;
    return tf.tensor2d(sigregDirections(d, p, this.opts.seed, step), [d, p]);
  }

  /** Target-encoder features for diagnostics, plus the zero-predictor loss on this batch's targets. */
  probe(mb: MicroBatch): DiagnosticsOutput {
    const m = mb.masks;
    const [tokens, pooled, zero] = tf.tidy(() => {
      const x = this.inputs(mb);
      const { output: h, tokens } = this.targetTokens(x.patches);
      const tgt = targets(this.targetOps, tokens, x.tgtIdx, m.numTargets);
      return [h, tf.mean(h, 1), predictionLoss(tf.zerosLike(tgt), tgt, this.opts.loss)];
    });
    const out = {
      tokens: tokens.dataSync() as Float32Array,
      pooled: pooled.dataSync() as Float32Array,
      zeroLoss: zero.dataSync()[0],
    };
    tf.dispose([tokens, pooled, zero]);
    return out;
  }

  dispose(): void {
    tf.dispose([...this.vars.values(), ...this.targetWeights.values(), ...this.constants.values()]);
  }
}
