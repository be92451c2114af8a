/**
 * The onnxruntime engine with its training state resident on a device (WebGPU): weights, AdamW
 * moments and the EMA target stay in device buffers between steps. A step is one run of the step
 * graph per chunk (which also sums the gradients) and one run of the update graph (AdamW + EMA,
 * onnx/update.ts); the host reads back the losses every step, the diagnostics when asked, and
 * the whole state only for checkpoints (`pull`).
 */
import { DeviceTransfer, release } from '../../runtime/device.ts';
import { createSession, Tensor, type Device, type Session } from '../../runtime/session.ts';
import type { ModelConfig } from '../../model/presets.ts';
import type { ParamStore } from '../../model/params.ts';
import type { ParamSpec } from '../../model/vit.ts';
import { ACC, GRAD, ONLINE, TARGET } from '../../onnx/training.ts';
import { MOMENT1, MOMENT2, NEXT, gapGraph, updateGraph, type UpdateScalars } from '../../onnx/update.ts';
import type { AdamW } from '../adamw.ts';
import type { Engine, MicroBatch, ProbeResult, StepResult } from '../engine.ts';
import type { ScheduleValues } from '../schedule.ts';
import { engineGraphs } from './engine.ts';
import { BatchFeeds, type Feeds, type OrtEngineOptions } from './feeds.ts';

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
  private readonly specs: ParamSpec[];
  private readonly encoder: ParamSpec[];

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
    this.specs = online.specs;
    this.encoder = target.specs;
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

  /** Uploads the host state (ParamStores, moments): at the start, or after a resume. */
  private async push(adam: AdamW): Promise<void> {
    for (const [prefix, data] of this.slots(adam)) {
      for (const s of prefix === TARGET ? this.encoder : this.specs) {
        const view = data(s);
        this.state.get(prefix + s.name) && release(this.state.get(prefix + s.name)!);
        this.state.set(prefix + s.name, await this.transfer.upload(view, s.shape));
      }
    }
  }

  /** Each state prefix with the host array view of a parameter. */
  private slots(adam: AdamW): [string, (s: ParamSpec) => Float32Array][] {
    const at = (a: Float32Array) => (s: ParamSpec) => {
      const off = this.online.offsets.get(s.name)!;
      return a.subarray(off, off + this.online.sizes.get(s.name)!);
    };
    return [
      [ONLINE, (s) => this.online.view(s.name)],
      [TARGET, (s) => this.target.view(s.name)],
      [MOMENT1, at(adam.m)],
      [MOMENT2, at(adam.v)],
    ];
  }

  private weights(prefixes: string[]): Feeds {
    const out: Feeds = {};
    for (const [k, t] of this.state) if (prefixes.some((p) => k.startsWith(p))) out[k] = t;
    return out;
  }

  async accumulate(mb: MicroBatch, gradScale: number, step: number): Promise<StepResult> {
    const total = { loss: 0, predLoss: 0, sigreg: 0 };
    const directions = this.batch.directions(step);
    const weights = this.weights([ONLINE, TARGET]);
    for (const { feeds, weight } of this.batch.chunks(mb)) {
      const scale = new Tensor('float32', Float32Array.of(gradScale * weight), []);
      const out = await this.sessions.step.run({ ...feeds, ...directions, ...weights, ...this.acc, grad_scale: scale });
      total.loss += weight * (out.loss.data as Float32Array)[0];
      total.predLoss += weight * (out.pred_loss.data as Float32Array)[0];
      total.sigreg += weight * (out.sigreg.data as Float32Array)[0];
      this.dropAcc();
      this.acc = Object.fromEntries(this.specs.map((s) => [ACC + s.name, out[GRAD + s.name]]));
    }
    return total;
  }

  private dropAcc(): void {
    if (this.acc !== this.zeros) for (const t of Object.values(this.acc)) release(t);
  }

  async update(s: ScheduleValues, adam: AdamW): Promise<void> {
    const { stepSize, invC2, decay } = adam.advance(s.lr, s.weightDecay);
    const scalars: UpdateScalars = { step_size: stepSize, inv_c2: invC2, decay, ema_rate: 1 - s.momentum };
    const feeds: Feeds = { ...Object.fromEntries(this.state) };
    for (const [k, v] of Object.entries(scalars)) feeds[k] = new Tensor('float32', Float32Array.of(v), []);
    for (const spec of this.specs) feeds[GRAD + spec.name] = this.acc[ACC + spec.name];
    const out = await this.sessions.update.run(feeds);
    for (const [k, t] of this.state) {
      release(t);
      this.state.set(k, out[NEXT + k]);
    }
    this.dropAcc();
    this.acc = this.zeros;
  }

  async emaGap(): Promise<number> {
    const out = await this.sessions.gap.run(this.weights([TARGET, ...this.encoder.map((s) => ONLINE + s.name)]));
    const [diff, norm] = [(out.diff2.data as Float32Array)[0], (out.norm2.data as Float32Array)[0]];
    return Math.sqrt(diff) / Math.sqrt(norm || 1);
  }

  async probe(mb: MicroBatch): Promise<ProbeResult> {
    const f = this.batch.masks(mb);
    const out = await this.sessions.probe.run({ patches: f.patches, tgt_rows: f.tgt_rows, ...this.weights([TARGET]) });
    return {
      tokens: out.tokens.data as Float32Array,
      pooled: out.pooled.data as Float32Array,
      zeroLoss: (out.zero_loss.data as Float32Array)[0],
    };
  }

  async pull(adam: AdamW): Promise<void> {
    for (const [prefix, data] of this.slots(adam)) {
      for (const s of prefix === TARGET ? this.encoder : this.specs)
        await this.transfer.download(this.state.get(prefix + s.name)!, data(s));
    }
  }

  async dispose(): Promise<void> {
    for (const t of this.state.values()) release(t);
    this.dropAcc();
    for (const t of Object.values(this.zeros)) release(t);
    await Promise.all([...Object.values(this.sessions).map((s) => s.release()), this.transfer.release()]);
  }
}
