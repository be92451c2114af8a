/**
 * A micro-batch as the onnxruntime step graphs' inputs (onnx/training.ts): patches, masks, the
 * host-computed token rows and tail positions, the target view and SIGReg's directions, in runs
 * of at most `chunk` images, each with its share of the micro-batch.
 */
import { Tensor } from '../../runtime/session.ts';
import { gridOf, type ModelConfig } from '../../model/presets.ts';
import { sigregDirections, type LossKind } from '../../model/objective.ts';
import { PROJECTOR_DIM, type Objective } from '../../model/vit.ts';
import type { ViewLayout } from '../../onnx/training.ts';
import {
  chunksOf,
  predictorKeyMask,
  tailPositions,
  targetSourceIdx,
  tokenRows,
  type MicroBatch,
  type DiagnosticsOutput,
  type StepResult,
} from '../engine.ts';

export interface OrtEngineOptions {
  loss: LossKind;
  /** SIGReg weight (0: off), projections, and the seed its directions are drawn from. */
  sigreg?: { weight: number; projections: number; seed: number };
  numTargets: number;
  /** Images per session run; a micro-batch runs as several (summed gradients). Default: all. */
  chunk?: number;
  /** Intra-op threads of the CPU provider (default: all cores). */
  threads?: number;
  /** Top target-encoder blocks the targets average (default 1). */
  targetLayers?: number;
  /** Micro-batches carry a view for the target encoder (augment.targetFlip). */
  targetView?: boolean;
  /** What the step learns from (default `ijepa`); the others need SIGReg and `views`. */
  objective?: Objective;
  /** The views of each image (objectives `lejepa` and `hybrid`). */
  views?: ViewLayout;
}

export type Feeds = Record<string, Tensor>;

const first = (t: Tensor) => (t.data as Float32Array)[0];

/** The diagnostics graph's outputs as the engine contract's DiagnosticsOutput. */
export function diagnosticsOutput(out: Feeds): DiagnosticsOutput {
  return {
    tokens: out.tokens.data as Float32Array,
    pooled: out.pooled.data as Float32Array,
    zeroLoss: first(out.zero_loss),
  };
}

const int64 = (a: Int32Array) => BigInt64Array.from(a, (v) => BigInt(v));

export class BatchFeeds {
  private readonly patchDim: number;
  private readonly numPatches: number;

  constructor(
    private readonly model: ModelConfig,
    private readonly opts: OrtEngineOptions,
  ) {
    this.patchDim = model.patchSize * model.patchSize * model.channels;
    this.numPatches = (model.imageSize / model.patchSize) ** 2;
  }

  /** Width of what SIGReg measures: the pooled context (I-JEPA) or the projection (views). */
  private get sigregDim(): number {
    return (this.opts.objective ?? 'ijepa') === 'ijepa' ? this.model.dim : PROJECTOR_DIM;
  }

  /** The diagnostics graph's inputs: the patches and the target tokens' rows. */
  probe(mb: MicroBatch): Feeds {
    const m = mb.masks;
    const n = this.numPatches;
    return {
      patches: new Tensor('float32', mb.patches, [mb.batch, n, this.patchDim]),
      tgt_rows: new Tensor('int64', tokenRows(m.tgtIdx, m.tgtLen, n), [m.numTargets * m.batch, m.tgtLen, 1]),
    };
  }

  /**
   * Runs a micro-batch chunk by chunk: `run` is one session run of the step graph on a chunk's
   * inputs (and keeps that chunk's gradient as its engine does); the losses come back weighted by
   * each chunk's share of the micro-batch.
   */
  async sumChunks(
    mb: MicroBatch,
    step: number,
    run: (feeds: Feeds, weight: number) => Promise<Feeds>,
  ): Promise<StepResult> {
    const total = { loss: 0, predLoss: 0, sigreg: 0 };
    const directions = this.directions(step);
    for (const { feeds, weight } of this.chunks(mb)) {
      const out = await run({ ...feeds, ...directions }, weight);
      total.loss += weight * first(out.loss);
      total.predLoss += weight * first(out.pred_loss);
      total.sigreg += weight * first(out.sigreg);
    }
    return total;
  }

  /** The inputs of a micro-batch's masks and patches. */
  private masks(mb: MicroBatch): Feeds {
    const m = mb.masks;
    const mb2 = m.numTargets * m.batch;
    const n = this.numPatches;
    return {
      patches: new Tensor('float32', mb.patches, [mb.batch, n, this.patchDim]),
      ctx_idx: new Tensor('int64', int64(m.ctxIdx), [m.batch, m.ctxLen]),
      ctx_rows: new Tensor('int64', tokenRows(m.ctxIdx, m.ctxLen, n), [m.batch, m.ctxLen, 1]),
      ctx_mask: new Tensor('float32', m.ctxMask, [m.batch, m.ctxLen]),
      key_mask: new Tensor('float32', predictorKeyMask(m), [mb2, m.ctxLen + m.tgtLen]),
      tgt_idx: new Tensor('int64', int64(m.tgtIdx), [mb2, m.tgtLen]),
      tgt_rows: new Tensor('int64', tokenRows(m.tgtIdx, m.tgtLen, n), [mb2, m.tgtLen, 1]),
      tgt_tail: new Tensor('int64', tailPositions(m.ctxLen + m.tgtLen, m.tgtLen), [m.tgtLen, 1]),
    };
  }

  /** The step graph's target-view inputs (only the training step reads them, not diagnostics). */
  private targetView(mb: MicroBatch): Feeds {
    if (!this.opts.targetView) return {};
    const m = mb.masks;
    const rows = tokenRows(targetSourceIdx(mb, gridOf(this.model)), m.tgtLen, this.numPatches);
    return {
      target_patches: new Tensor('float32', mb.targetView?.patches ?? mb.patches, [
        mb.batch,
        this.numPatches,
        this.patchDim,
      ]),
      tgt_src_rows: new Tensor('int64', rows, [m.numTargets * m.batch, m.tgtLen, 1]),
    };
  }

  /** SIGReg's random directions of this optimizer step, when the graph has SIGReg. */
  private directions(step: number): Feeds {
    const sg = this.opts.sigreg;
    if (!sg?.weight) return {};
    const d = this.sigregDim;
    return {
      directions: new Tensor('float32', sigregDirections(d, sg.projections, sg.seed, step), [d, sg.projections]),
    };
  }

  /** The local views' input, when the objective reads them. */
  private locals(mb: MicroBatch): Feeds {
    const v = this.opts.views;
    if (!v?.locals) return {};
    if (!mb.locals) throw new Error('the micro-batch carries no local views');
    const n = v.localGrid.rows * v.localGrid.cols;
    const images = mb.locals.length / (v.locals * n * this.patchDim);
    return {
      locals: new Tensor('float32', mb.locals, [images * v.locals, n, this.patchDim]),
      view_split: new Tensor('int64', BigInt64Array.from([images * v.globals, images * v.locals], BigInt), [2]),
    };
  }

  /**
   * The micro-batch's runs: I-JEPA's chunks grouped by context length; with views, the whole
   * micro-batch at once (the projector's BatchNorm, SIGReg and the views' centres are batch
   * statistics, which chunks would change).
   */
  private *chunks(mb: MicroBatch): Generator<{ feeds: Feeds; weight: number }> {
    const objective = this.opts.objective ?? 'ijepa';
    if (objective === 'hybrid') {
      yield { feeds: { ...this.masks(mb), ...this.locals(mb) }, weight: 1 };
      return;
    }
    if (objective === 'ijepa' || objective === 'mae') {
      for (const { part, weight } of chunksOf(mb, this.opts.chunk ?? mb.batch, this.numPatches * this.patchDim))
        yield { feeds: { ...this.masks(part), ...this.targetView(part) }, weight };
      return;
    }
    if (!mb.views) throw new Error('objective lejepa: the micro-batch carries no views');
    const views = new Tensor('float32', mb.views, [
      mb.views.length / (this.numPatches * this.patchDim),
      this.numPatches,
      this.patchDim,
    ]);
    yield { feeds: { views, ...this.locals(mb) }, weight: 1 };
  }
}
