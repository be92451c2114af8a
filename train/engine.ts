/**
 * What the training loop needs from an engine, and the micro-batch every engine takes. The state
 * an engine trains is the host's ParamStores and AdamW moments (or a device copy it pulls back
 * into them), so checkpoints are interchangeable between engines and devices.
 */
import type { AdamW } from './adamw.ts';
import { emaGap, emaUpdate } from './ema.ts';
import { permuteMasks, sliceMasks, type MaskBatch } from './masks.ts';
import type { ScheduleValues } from './schedule.ts';
import { targetViewIdx, type TargetView } from './views.ts';
import type { ParamStore } from '../model/params.ts';

export interface MicroBatch {
  /** [B, N, p·p·C] normalised patches. */
  patches: Float32Array;
  batch: number;
  masks: MaskBatch;
  /** What the target encoder sees instead of `patches` (augment.targetFlip). */
  targetView?: TargetView;
  /** Objective `lejepa`: [B, Vg, N, p·p·C], the global views of each image together. */
  views?: Float32Array;
  /** Objectives `lejepa` and `hybrid` with local views: [B, Vl, n, p·p·C]. */
  locals?: Float32Array;
}

export interface StepResult {
  loss: number;
  /** Prediction loss alone (equals `loss` without SIGReg). */
  predLoss: number;
  sigreg: number;
}

/** What the diagnostics pass (`Engine.probe`) returns: the collapse diagnostics' inputs. */
export interface DiagnosticsOutput {
  /** Target-encoder tokens [B·N, D] before the target layer norm. */
  tokens: Float32Array;
  /** Pooled target-encoder features [B, D]. */
  pooled: Float32Array;
  zeroLoss: number;
}

/** What the training loop needs from an engine: one optimizer step is accumulate × k, then update. */
export interface Engine {
  /** Adds gradScale × the gradients of this micro-batch's loss to the step's gradients. */
  accumulate(mb: MicroBatch, gradScale: number, step: number): StepResult | Promise<StepResult>;
  /** AdamW on the step's gradients (counted in `adam.t`), then the EMA into the target; clears the gradients. */
  update(s: ScheduleValues, adam: AdamW): void | Promise<void>;
  /** The target encoder on `mb` and the zero-predictor loss, for the diagnostics (no gradients). */
  probe(mb: MicroBatch): DiagnosticsOutput | Promise<DiagnosticsOutput>;
  /** ‖θ − θ̄‖ / ‖θ‖ over the encoder weights. */
  emaGap(): number | Promise<number>;
  /** Copies state the engine holds elsewhere (a device) into the ParamStores and `adam`'s moments. */
  pull(adam: AdamW): void | Promise<void>;
  dispose(): void | Promise<void>;
}

/**
 * An engine whose state is the host arrays themselves: it computes gradients into a host buffer,
 * and the update is AdamW and the EMA in JS on the ParamStores.
 */
export abstract class HostEngine implements Engine {
  /** The step's accumulated gradients, ParamStore order. */
  readonly grad: Float32Array;

  constructor(
    protected readonly online: ParamStore,
    protected readonly target: ParamStore,
  ) {
    this.grad = new Float32Array(online.size);
  }

  /** Adds gradScale × the gradients of this micro-batch's loss into gradAccum (ParamStore order). */
  abstract forwardBackward(
    mb: MicroBatch,
    gradAccum: Float32Array,
    gradScale: number,
    step: number,
  ): StepResult | Promise<StepResult>;

  abstract probe(mb: MicroBatch): DiagnosticsOutput | Promise<DiagnosticsOutput>;
  abstract dispose(): void | Promise<void>;

  /** After the update changed the ParamStores (TF.js mirrors them into its variables). */
  protected changed(): void {}

  accumulate(mb: MicroBatch, gradScale: number, step: number): StepResult | Promise<StepResult> {
    return this.forwardBackward(mb, this.grad, gradScale, step);
  }

  update(s: ScheduleValues, adam: AdamW): void {
    adam.step(this.online.data, this.grad, s.lr, s.weightDecay);
    emaUpdate(this.target.data, this.online.data.subarray(0, this.target.size), s.momentum);
    this.grad.fill(0);
    this.changed();
  }

  emaGap(): number {
    return emaGap(this.online.data.subarray(0, this.target.size), this.target.data);
  }

  pull(): void {}
}

/** Target-patch indices into the target encoder's tokens: the mask's own, or mapped into the target view. */
export function targetSourceIdx(mb: MicroBatch, grid: { rows: number; cols: number }): Int32Array {
  const m = mb.masks;
  return mb.targetView
    ? targetViewIdx(m.tgtIdx, m.numTargets, m.batch, m.tgtLen, mb.targetView.flipped, grid)
    : m.tgtIdx;
}

/** Key mask over [context repeated per target block, target tokens]: [M·B, L + T]. */
export function predictorKeyMask(m: MaskBatch): Float32Array {
  const width = m.ctxLen + m.tgtLen;
  const out = new Float32Array(m.numTargets * m.batch * width);
  for (let t = 0; t < m.numTargets; t++) {
    for (let b = 0; b < m.batch; b++) {
      const row = (t * m.batch + b) * width;
      out.set(m.ctxMask.subarray(b * m.ctxLen, (b + 1) * m.ctxLen), row);
      out.fill(1, row + m.ctxLen, row + width);
    }
  }
  return out;
}

/**
 * A micro-batch as chunks of at most `chunk` images, each with its share of the batch (weight).
 * Chunks of images with similar context lengths pad less; the loss is a mean over images with
 * equal target counts, so regrouping them changes nothing but the padding.
 */
export function* chunksOf(mb: MicroBatch, chunk: number, per: number): Generator<{ part: MicroBatch; weight: number }> {
  const order = [...Array(mb.batch).keys()].sort((a, b) => mb.masks.ctxCount[a] - mb.masks.ctxCount[b]);
  const sorted = permuteBatch(mb, order, per);
  for (let from = 0; from < mb.batch; from += chunk) {
    const to = Math.min(mb.batch, from + chunk);
    const view = sorted.targetView;
    yield {
      part: {
        patches: sorted.patches.subarray(from * per, to * per),
        batch: to - from,
        masks: sliceMasks(sorted.masks, from, to),
        ...(view
          ? {
              targetView: {
                patches: view.patches.subarray(from * per, to * per),
                flipped: view.flipped.subarray(from, to),
              },
            }
          : {}),
      },
      weight: (to - from) / mb.batch,
    };
  }
}

/** The micro-batch with its images reordered: image i of the result is image order[i] of mb. */
export function permuteBatch(mb: MicroBatch, order: number[], per: number): MicroBatch {
  const reorder = (a: Float32Array) => {
    const out = new Float32Array(a.length);
    order.forEach((src, i) => out.set(a.subarray(src * per, (src + 1) * per), i * per));
    return out;
  };
  const view = mb.targetView;
  return {
    patches: reorder(mb.patches),
    batch: mb.batch,
    masks: permuteMasks(mb.masks, order),
    ...(view
      ? { targetView: { patches: reorder(view.patches), flipped: Uint8Array.from(order, (src) => view.flipped[src]) } }
      : {}),
  };
}

/**
 * Row r·n + idx[r, k] of the tokens viewed as [rows·n, D], for each index of idx [rows, len]:
 * what the emitted graphs gather at ([rows, len, 1], onnx/ops.ts IndexInputs), so that they need
 * no int64 arithmetic on the device.
 */
export function tokenRows(idx: Int32Array, len: number, n: number): BigInt64Array {
  return BigInt64Array.from(idx, (v, i) => BigInt(Math.floor(i / len) * n + v));
}

/** Positions of the last `len` of `total` tokens ([len, 1]): the predictor's target queries. */
export function tailPositions(total: number, len: number): BigInt64Array {
  return BigInt64Array.from({ length: len }, (_, t) => BigInt(total - len + t));
}
