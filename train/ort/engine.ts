/**
 * The onnxruntime training engine on the CPU: the step graph of onnx/training.ts, with the
 * weights fed straight from the ParamStores (no copies to keep in sync) and the gradients coming
 * back into one preallocated buffer laid out like the ParamStore, so accumulating them is one
 * pass. AdamW and the EMA run in JS on the same arrays (HostEngine).
 */
import { createSession, Tensor, type Session } from '../../runtime/session.ts';
import type { ModelConfig } from '../../model/presets.ts';
import type { ParamStore } from '../../model/params.ts';
import { GRAD, ONLINE, TARGET, probeGraph, stepGraph, viewsGraph } from '../../onnx/training.ts';
import { HostEngine, type MicroBatch, type ProbeResult, type StepResult } from '../engine.ts';
import { BatchFeeds, type Feeds, type OrtEngineOptions } from './feeds.ts';

export type { OrtEngineOptions } from './feeds.ts';

/** The step and diagnostics graphs an engine runs (the device engine adds gradient accumulation to the step). */
export function engineGraphs(
  model: ModelConfig,
  opts: OrtEngineOptions,
  accumulate = false,
): { step: Uint8Array; probe: Uint8Array } {
  const step = opts.views
    ? viewsGraph(model, opts.views, opts.sigreg!, { accumulate })
    : stepGraph(model, opts.numTargets, opts.loss, {
        sigreg: opts.sigreg?.weight ? opts.sigreg : undefined,
        targetLayers: opts.targetLayers,
        targetView: opts.targetView,
        accumulate,
      });
  return { step, probe: probeGraph(model, opts.numTargets, opts.loss, opts.targetLayers) };
}

export class OrtEngine extends HostEngine {
  private readonly weights: Feeds = {};
  private readonly gradBuf: Float32Array;
  private readonly fetches: Record<string, Tensor | null> = { loss: null, pred_loss: null, sigreg: null };
  private readonly batch: BatchFeeds;

  private constructor(
    model: ModelConfig,
    online: ParamStore,
    target: ParamStore,
    opts: OrtEngineOptions,
    private readonly step: Session,
    private readonly diag: Session,
  ) {
    super(online, target);
    for (const [prefix, store] of [
      [ONLINE, online],
      [TARGET, target],
    ] as const) {
      for (const s of store.specs) this.weights[prefix + s.name] = new Tensor('float32', store.view(s.name), s.shape);
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
    this.batch = new BatchFeeds(model, opts);
  }

  static async create(
    model: ModelConfig,
    online: ParamStore,
    target: ParamStore,
    opts: OrtEngineOptions,
  ): Promise<OrtEngine> {
    const graphs = engineGraphs(model, opts);
    const options = { threads: opts.threads, memArena: true, profile: process.env.IJEPA_ORT_PROFILE };
    const [step, diag] = await Promise.all([createSession(graphs.step, options), createSession(graphs.probe, options)]);
    return new OrtEngine(model, online, target, opts, step, diag);
  }

  async forwardBackward(mb: MicroBatch, gradAccum: Float32Array, gradScale: number, step = 0): Promise<StepResult> {
    const total = { loss: 0, predLoss: 0, sigreg: 0 };
    const directions = this.batch.directions(step);
    for (const { feeds, weight } of this.batch.chunks(mb)) {
      const out = await this.step.run({ ...feeds, ...directions, ...this.weights }, this.fetches);
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
    const f = this.batch.masks(mb);
    const targetFeeds = Object.fromEntries(Object.entries(this.weights).filter(([k]) => k.startsWith(TARGET)));
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
