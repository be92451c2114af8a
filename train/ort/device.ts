/**
 * The onnxruntime engine with its training state resident on a device (WebGPU): weights, AdamW
 * moments and the EMA target stay in device buffers between steps. A step is one run of the step
 * graph per chunk (which also sums the gradients) and one run of the update graph (AdamW + EMA,
 * onnx/update.ts); the host reads back the losses every step, the diagnostics when asked, and
 * the whole state only for checkpoints (`pull`).
 */
import { DeviceTransfer, release } from '../../runtime/transfer.ts';
import { createSession, Tensor, type Device, type Session } from '../../runtime/session.ts';
import type { ModelConfig } from '../../model/presets.ts';
import { ParamStore } from '../../model/params.ts';
import { ACC, GRAD, ONLINE, TARGET } from '../../onnx/training.ts';
import { MOMENT1, MOMENT2, NEXT, gapGraph, updateGraph, type UpdateScalars } from '../../onnx/update.ts';
import type { AdamW } from '../adamw.ts';
import type { Engine, MicroBatch, DiagnosticsOutput, StepResult } from '../engine.ts';
import type { ScheduleValues } from '../schedule.ts';
import { engineGraphs } from './engine.ts';
import { BatchFeeds, diagnosticsOutput, type Feeds, type OrtEngineOptions } from './feeds.ts';

export interface DeviceEngineOptions extends OrtEngineOptions {
  device: Device;
}

interface Sessions {
  step: Session;
  probe: Session;
  update: Session;
  gap: Session;
}

export class DeviceEngine implements Engine {
  /** `online/`, `target/`, `adam.m/`, `adam.v/` per parameter: the state, on the device. */
  private state = new Map<string, Tensor>();
  /** The step's gradient sum so far (`acc/`), or the zeros a step starts from. */
  private acc: Feeds;
  private readonly batch: BatchFeeds;

  private constructor(
    model: ModelConfig,
    private readonly online: ParamStore,
    private readonly target: ParamStore,
    opts: OrtEngineOptions,
    private readonly sessions: Sessions,
    private readonly transfer: DeviceTransfer,
    private readonly zeros: Feeds,
  ) {
    this.batch = new BatchFeeds(model, opts);
    this.acc = zeros;
  }

  static async create(
    model: ModelConfig,
    online: ParamStore,
    target: ParamStore,
    adam: AdamW,
    opts: DeviceEngineOptions,
  ): Promise<DeviceEngine> {
    const device = opts.device;
    const graphs = engineGraphs(model, opts, true);
    const grads = online.specs.map((s) => GRAD + s.name);
    const o = { device, threads: opts.threads };
    const [step, probe, update, gap] = await Promise.all([
      createSession(graphs.step, { ...o, deviceOutputs: grads }),
      createSession(graphs.probe, o),
      createSession(updateGraph(online.specs, target.specs, adam.config), { ...o, deviceOutputs: 'all' }),
      createSession(gapGraph(target.specs), o),
    ]);
    const transfer = await DeviceTransfer.create(device);
    const zeros: Feeds = {};
    for (const s of online.specs)
      zeros[ACC + s.name] = await transfer.upload(new Float32Array(online.sizes.get(s.name)!), s.shape);
    const engine = new DeviceEngine(model, online, target, opts, { step, probe, update, gap }, transfer, zeros);
    await engine.push(adam);
    return engine;
  }

  /** Uploads the host state (ParamStores, moments), once, when the engine is created. */
  private async push(adam: AdamW): Promise<void> {
    for (const [prefix, store] of this.slots(adam))
      for (const s of store.specs)
        this.state.set(prefix + s.name, await this.transfer.upload(store.view(s.name), s.shape));
  }

  /** Each state prefix with the host arrays it mirrors, as named views. */
  private slots(adam: AdamW): [string, ParamStore][] {
    return [
      [ONLINE, this.online],
      [TARGET, this.target],
      [MOMENT1, new ParamStore(this.online.specs, adam.m)],
      [MOMENT2, new ParamStore(this.online.specs, adam.v)],
    ];
  }

  private weights(prefixes: string[]): Feeds {
    const out: Feeds = {};
    for (const [k, t] of this.state) if (prefixes.some((p) => k.startsWith(p))) out[k] = t;
    return out;
  }

  accumulate(mb: MicroBatch, gradScale: number, step: number): Promise<StepResult> {
    const weights = this.weights([ONLINE, TARGET]);
    return this.batch.sumChunks(mb, step, async (feeds, weight) => {
      const scale = new Tensor('float32', Float32Array.of(gradScale * weight), []);
      const out = await this.sessions.step.run({ ...feeds, ...weights, ...this.acc, grad_scale: scale });
      this.dropAcc();
      this.acc = Object.fromEntries(this.online.specs.map((s) => [ACC + s.name, out[GRAD + s.name]]));
      return out;
    });
  }

  private dropAcc(): void {
    if (this.acc !== this.zeros) for (const t of Object.values(this.acc)) release(t);
  }

  async update(s: ScheduleValues, adam: AdamW): Promise<void> {
    const { stepSize, invC2, decay } = adam.advance(s.lr, s.weightDecay);
    const scalars: UpdateScalars = { step_size: stepSize, inv_c2: invC2, decay, ema_rate: 1 - s.momentum };
    const feeds: Feeds = { ...Object.fromEntries(this.state) };
    for (const [k, v] of Object.entries(scalars)) feeds[k] = new Tensor('float32', Float32Array.of(v), []);
    for (const spec of this.online.specs) feeds[GRAD + spec.name] = this.acc[ACC + spec.name];
    const out = await this.sessions.update.run(feeds);
    for (const [k, t] of this.state) {
      release(t);
      this.state.set(k, out[NEXT + k]);
    }
    this.dropAcc();
    this.acc = this.zeros;
  }

  async emaGap(): Promise<number> {
    const out = await this.sessions.gap.run(this.weights([TARGET, ...this.target.specs.map((s) => ONLINE + s.name)]));
    const [diff, norm] = [(out.diff2.data as Float32Array)[0], (out.norm2.data as Float32Array)[0]];
    return Math.sqrt(diff) / Math.sqrt(norm || 1);
  }

  async probe(mb: MicroBatch): Promise<DiagnosticsOutput> {
    return diagnosticsOutput(await this.sessions.probe.run({ ...this.batch.probe(mb), ...this.weights([TARGET]) }));
  }

  async pull(adam: AdamW): Promise<void> {
    for (const [prefix, store] of this.slots(adam))
      for (const s of store.specs) await this.transfer.download(this.state.get(prefix + s.name)!, store.view(s.name));
  }

  async dispose(): Promise<void> {
    for (const t of this.state.values()) release(t);
    this.dropAcc();
    for (const t of Object.values(this.zeros)) release(t);
    await Promise.all([...Object.values(this.sessions).map((s) => s.release()), this.transfer.release()]);
  }
}
