/**
 * The onnxruntime training engine on the CPU: the step graph of onnx/training.ts, with the
 * weights fed straight from the ParamStores (no copies to keep in sync) and the gradients coming
 * back into one preallocated buffer laid out like the ParamStore, so accumulating them is one
 * pass. AdamW and the EMA run in JS on the same arrays (HostEngine).
 */
import { createSession, Tensor, type Session } from '../../runtime/session.ts';
import type { ModelConfig } from '../../model/presets.ts';
import { ParamStore } from '../../model/params.ts';
import { GRAD, ONLINE, TARGET, lejepaGraph, maeGraph, probeGraph, stepGraph } from '../../onnx/training.ts';
import { HostEngine, type MicroBatch, type DiagnosticsOutput, type StepResult } from '../engine.ts';
import { BatchFeeds, diagnosticsOutput, type Feeds, type OrtEngineOptions } from './feeds.ts';

export type { OrtEngineOptions } from './feeds.ts';

/** The step and diagnostics graphs an engine runs (the device engine adds gradient accumulation to the step). */
export function engineGraphs(
  model: ModelConfig,
  opts: OrtEngineOptions,
  accumulate = false,
): { step: Uint8Array; probe: Uint8Array } {
  const step =
    opts.objective === 'lejepa'
      ? lejepaGraph(model, opts.views!, opts.sigreg!, { accumulate })
      : opts.objective === 'mae'
        ? maeGraph(model, { accumulate })
        : stepGraph(model, opts.numTargets, opts.loss, {
            sigreg: opts.sigreg?.weight ? opts.sigreg : undefined,
            targetLayers: opts.targetLayers,
            targetView: opts.targetView,
            accumulate,
            ...(opts.objective === 'hybrid' ? { views: opts.views } : {}),
          });
  return { step, probe: probeGraph(model, opts.numTargets, opts.loss, opts.targetLayers) };
}

export class OrtEngine extends HostEngine {
  private readonly weights: Feeds = {};
  /** The diagnostics graph's weights: the target encoder's only. */
  private readonly targetWeights: Feeds = {};
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
    for (const s of online.specs) this.weights[ONLINE + s.name] = new Tensor('float32', online.view(s.name), s.shape);
    for (const s of target.specs)
      this.weights[TARGET + s.name] = this.targetWeights[TARGET + s.name] = new Tensor(
        'float32',
        target.view(s.name),
        s.shape,
      );
    // Gradients land in one buffer laid out like the online parameters.
    const grads = new ParamStore(online.specs, new Float32Array(online.size));
    this.gradBuf = grads.data;
    for (const s of online.specs) this.fetches[GRAD + s.name] = new Tensor('float32', grads.view(s.name), s.shape);
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

  forwardBackward(mb: MicroBatch, gradAccum: Float32Array, gradScale: number, step = 0): Promise<StepResult> {
    return this.batch.sumChunks(mb, step, async (feeds, weight) => {
      const out = await this.step.run({ ...feeds, ...this.weights }, this.fetches);
      const s = gradScale * weight;
      const g = this.gradBuf;
      for (let i = 0; i < g.length; i++) gradAccum[i] += s * g[i];
      return out;
    });
  }

  async probe(mb: MicroBatch): Promise<DiagnosticsOutput> {
    return diagnosticsOutput(await this.diag.run({ ...this.batch.probe(mb), ...this.targetWeights }));
  }

  async dispose(): Promise<void> {
    await Promise.all([this.step.release(), this.diag.release()]);
  }
}
