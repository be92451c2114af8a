/**
 * The onnxruntime training engine: the step graph of training-graphs.ts run by onnxruntime-node
 * on the CPU. Weights are fed straight from the ParamStores (no copies to keep in sync); the
 * gradients come back into one preallocated buffer laid out like the ParamStore, so accumulating
 * them is one pass. AdamW, the EMA and the schedules stay in loop.ts, shared with the TF.js engine.
 */
import { createSession, Tensor, type Session } from '../../runtime/session.ts';
import { gridOf, type ModelConfig } from '../../model/presets.ts';
import type { ParamStore } from '../../model/params.ts';
import { sigregDirections, type LossKind } from '../../model/objective.ts';
import { GRAD, ONLINE, TARGET, probeGraph, stepGraph, viewsGraph } from '../../onnx/training.ts';
import { PROJECTOR_DIM } from '../../model/vit.ts';
import {
  chunksOf,
  predictorKeyMask,
  tailPositions,
  targetSourceIdx,
  tokenRows,
  type Engine,
  type MicroBatch,
  type ProbeResult,
  type StepResult,
} from '../engine.ts';

export interface OrtEngineOptions {
  loss: LossKind;
  /** SIGReg weight (0: off), projections, and the seed its directions are drawn from. */
  sigreg?: { weight: number; projections: number; seed: number };
  numTargets: number;
  /** Images per session run; a micro-batch runs as several (summed gradients). */
  chunk?: number;
  /** Intra-op threads (default: all cores). */
  threads?: number;
  /** Top target-encoder blocks the targets average (default 1). */
  targetLayers?: number;
  /** Micro-batches carry a view for the target encoder (augment.targetFlip). */
  targetView?: boolean;
  /** Objective `views` with this many views per image (micro-batches carry them; needs SIGReg). */
  views?: number;
}

const int64 = (a: Int32Array) => BigInt64Array.from(a, (v) => BigInt(v));

export class OrtEngine implements Engine {
  private readonly weightFeeds: Record<string, Tensor> = {};
  private readonly gradBuf: Float32Array;
  private readonly fetches: Record<string, Tensor | null> = { loss: null, pred_loss: null, sigreg: null };
  private readonly patchDim: number;
  private readonly numPatches: number;

  private constructor(
    private readonly model: ModelConfig,
    online: ParamStore,
    target: ParamStore,
    private readonly opts: OrtEngineOptions,
    private readonly step: Session,
    private readonly diag: Session,
  ) {
    for (const [prefix, store] of [
      [ONLINE, online],
      [TARGET, target],
    ] as const) {
      for (const s of store.specs)
        this.weightFeeds[prefix + s.name] = new Tensor('float32', store.view(s.name), s.shape);
    }
    this.gradBuf = new Float32Array(online.size);
    for (const s of online.specs) {
      const off = online.offsets.get(s.name)!;
      this.fetches[GRAD + s.name] = new Tensor(
        'float32',
        this.gradBuf.subarray(off, off + online.sizes.get(s.name)!),
        s.shape,
      );
    }
    this.patchDim = model.patchSize * model.patchSize * model.channels;
    this.numPatches = (model.imageSize / model.patchSize) ** 2;
  }

  static async create(
    model: ModelConfig,
    online: ParamStore,
    target: ParamStore,
    opts: OrtEngineOptions,
  ): Promise<OrtEngine> {
    const options = { threads: opts.threads, memArena: true, profile: process.env.IJEPA_ORT_PROFILE };
    const create = (graph: Uint8Array) => createSession(graph, options);
    const [step, diag] = await Promise.all([
      create(
        opts.views
          ? viewsGraph(model, opts.views, opts.sigreg!)
          : stepGraph(model, opts.numTargets, opts.loss, {
              sigreg: opts.sigreg?.weight ? opts.sigreg : undefined,
              targetLayers: opts.targetLayers,
              targetView: opts.targetView,
            }),
      ),
      create(probeGraph(model, opts.numTargets, opts.loss, opts.targetLayers)),
    ]);
    return new OrtEngine(model, online, target, opts, step, diag);
  }

  /** Width of what SIGReg measures: the pooled context (I-JEPA) or the projection (views). */
  private get sigregDim(): number {
    return this.opts.views ? PROJECTOR_DIM : this.model.dim;
  }

  /** Weights are read from the ParamStores at every run: nothing to copy. */
  syncOnline(): void {}
  syncTarget(): void {}

  private feeds(mb: MicroBatch): Record<string, Tensor> {
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
  private viewFeeds(mb: MicroBatch): Record<string, Tensor> {
    if (!this.opts.targetView) return {};
    const m = mb.masks;
    return {
      target_patches: new Tensor('float32', mb.targetView?.patches ?? mb.patches, [
        mb.batch,
        this.numPatches,
        this.patchDim,
      ]),
      tgt_src_rows: new Tensor('int64', tokenRows(targetSourceIdx(mb, gridOf(this.model)), m.tgtLen, this.numPatches), [
        m.numTargets * m.batch,
        m.tgtLen,
        1,
      ]),
    };
  }

  private *maskChunks(mb: MicroBatch, chunk: number): Generator<{ feeds: Record<string, Tensor>; weight: number }> {
    for (const { part, weight } of chunksOf(mb, chunk, this.numPatches * this.patchDim))
      yield { feeds: { ...this.feeds(part), ...this.viewFeeds(part) }, weight };
  }

  /** Objective `views`: runs of whole images, all their views together (the loss pairs them up). */
  private *viewChunks(mb: MicroBatch, chunk: number): Generator<{ feeds: Record<string, Tensor>; weight: number }> {
    if (!mb.views) throw new Error('objective views: the micro-batch carries no views');
    const v = this.opts.views!;
    const per = v * this.numPatches * this.patchDim;
    for (let from = 0; from < mb.batch; from += chunk) {
      const to = Math.min(mb.batch, from + chunk);
      yield {
        feeds: {
          views: new Tensor('float32', mb.views.subarray(from * per, to * per), [
            (to - from) * v,
            this.numPatches,
            this.patchDim,
          ]),
        },
        weight: (to - from) / mb.batch,
      };
    }
  }

  /** Same contract as TfjsEngine.forwardBackward: gradients are added into `gradAccum`, scaled. */
  async forwardBackward(mb: MicroBatch, gradAccum: Float32Array, gradScale: number, step = 0): Promise<StepResult> {
    const chunk = this.opts.chunk ?? mb.batch;
    const total = { loss: 0, predLoss: 0, sigreg: 0 };
    const sg = this.opts.sigreg;
    const extra: Record<string, Tensor> = sg?.weight
      ? {
          directions: new Tensor('float32', sigregDirections(this.sigregDim, sg.projections, sg.seed, step), [
            this.sigregDim,
            sg.projections,
          ]),
        }
      : {};
    for (const { feeds, weight } of this.opts.views ? this.viewChunks(mb, chunk) : this.maskChunks(mb, chunk)) {
      const out = await this.step.run({ ...feeds, ...extra, ...this.weightFeeds }, this.fetches);
      total.loss += weight * (out.loss.data as Float32Array)[0];
      total.predLoss += weight * (out.pred_loss.data as Float32Array)[0];
      total.sigreg += weight * (out.sigreg.data as Float32Array)[0];
      const s = gradScale * weight;
      const g = this.gradBuf;
      for (let i = 0; i < g.length; i++) gradAccum[i] += s * g[i];
    }
    return total;
  }

  async probe(mb: MicroBatch): Promise<ProbeResult> {
    const f = this.feeds(mb);
    const targetFeeds = Object.fromEntries(Object.entries(this.weightFeeds).filter(([k]) => k.startsWith(TARGET)));
    const out = await this.diag.run({ patches: f.patches, tgt_rows: f.tgt_rows, ...targetFeeds });
    return {
      tokens: out.tokens.data as Float32Array,
      pooled: out.pooled.data as Float32Array,
      zeroLoss: (out.zero_loss.data as Float32Array)[0],
    };
  }

  async dispose(): Promise<void> {
    await Promise.all([this.step.release(), this.diag.release()]);
  }
}
