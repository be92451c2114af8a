/**
 * `ijepa finetune`: full fine-tuning of a package's encoder with a linear head on the mean of its
 * output tokens (graph.ts), on labeled images; AdamW with layer-wise learning-rate decay
 * (layers.ts), linear warmup then cosine, label smoothing, flips and padded translations. The test
 * (or validation) split is scored once, after training, and the result is written as a package
 * whose probe.json is the head as a linear probe, so `/v1/classify` serves it unchanged.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { createSession, Tensor, type Session } from '../runtime/session.ts';
import { cpuHardware } from '../runtime/devices.ts';
import { readPackage, describeFile, contentHash, writePackage, MANIFEST } from '../format/package.ts';
import type { Manifest } from '../format/manifest.ts';
import { normalizeChw, type Preprocess } from '../format/preprocess.ts';
import { probeSchema } from '../format/probe.ts';
import { labeledSplits, describeTest, type SplitOptions } from '../eval/probe.ts';
import { LabeledImages } from '../eval/images.ts';
import { classificationReport } from '../eval/logreg.ts';
import { modelConfig } from '../eval/eval.ts';
import type { ModelConfig } from '../model/presets.ts';
import { ParamStore } from '../model/params.ts';
import { encoderSpecs } from '../model/vit.ts';
import { Rng } from '../model/rng.ts';
import { encoderGraph, weightsIn } from '../onnx/inference.ts';
import { GRAD, ONLINE } from '../onnx/training.ts';
import { AdamW } from '../train/adamw.ts';
import { BudgetFit } from '../train/budget.ts';
import { learningRate, planByEpochs, type Plan, type ScheduleConfig } from '../train/schedule.ts';
import { readCheckpoint, writeCheckpoint } from '../train/checkpoint.ts';
import { FEAT_MEAN, FEAT_STD, HEAD_B, HEAD_W, finetuneGraph, finetuneSpecs } from './graph.ts';
import { layerScales } from './layers.ts';

export const FINETUNE_CHECKPOINT = 'finetune.ckpt';
export const FINETUNE_RESULT = 'finetune.json';

export interface FinetuneOptions extends Omit<SplitOptions, 'seed'> {
  /** Source package: its architecture, preprocessing and (unless randomInit) its encoder. */
  model: string;
  /** Package directory to write. */
  out: string;
  /** Start from the same architecture drawn from the seed instead of the package's weights. */
  randomInit?: boolean;
  epochs?: number;
  /** Stop after this many minutes of training, the cosine fitted to it (train/budget.ts). */
  timeBudgetMin?: number;
  batch?: number;
  lr?: number;
  weightDecay?: number;
  betas?: [number, number];
  /** Layer-wise learning-rate decay (1 = off). */
  layerDecay?: number;
  warmupEpochs?: number;
  labelSmoothing?: number;
  /** Random horizontal flips and padded translations (default on). */
  augment?: boolean;
  seed?: number;
  /** onnxruntime intra-op threads. */
  threads?: number;
  /** Continue from `<out>/finetune.ckpt`. */
  resume?: boolean;
  /** Optimizer steps between checkpoints (one is always written at the end of training). */
  checkpointEvery?: number;
  log?: (s: string) => void;
  /** Log lines rather than one line rewritten in place. */
  plain?: boolean;
  /** Called after every optimizer step, once its checkpoint (if due) is written. */
  onStep?: (step: number) => void;
}

/** What a run was asked to do; a resumed run must be asked the same. */
export interface FinetuneSettings {
  [key: string]: number | string | boolean | null;
  model: string;
  modelContentHash: string;
  randomInit: boolean;
  data: string;
  test: string | null;
  validation: boolean;
  limit: number | null;
  testLimit: number | null;
  epochs: number;
  timeBudgetMin: number | null;
  batch: number;
  lr: number;
  weightDecay: number;
  beta1: number;
  beta2: number;
  layerDecay: number;
  warmupEpochs: number;
  labelSmoothing: number;
  augment: boolean;
  seed: number;
  threads: number;
}

export interface FinetuneResult {
  accuracy: number;
  macroF1: number;
  perClass: { name: string; precision: number; recall: number; f1: number; support: number }[];
  trainCount: number;
  testCount: number;
  testSplit: string;
  steps: number;
  /** Epochs of training done (fractional where a budget or the plan ended mid-epoch). */
  epochs: number;
  imagesSeen: number;
  /** Training seconds (resumed runs included; evaluation not). */
  seconds: number;
  /** Training images per second over the run. */
  imagesPerSec: number;
  finalLoss: number;
  settings: FinetuneSettings;
  hardware: string;
}

/**
 * Defaults. The learning rate 1e-3 is the usual AdamW peak for ViT-tiny-sized models trained on
 * CIFAR-10-sized images at batches of 64–128, and the random-init row (which learns everything
 * from the labels) needs it; the layer decay 0.75 keeps the patch embedding of a 6-block encoder
 * at 0.75⁷ ≈ 0.13 of it, so a pre-trained start is moved gently where it is most general.
 */
export const FINETUNE_DEFAULTS = {
  epochs: 50,
  batch: 64,
  lr: 1e-3,
  weightDecay: 0.05,
  betas: [0.9, 0.999] as [number, number],
  layerDecay: 0.75,
  warmupEpochs: 5,
  labelSmoothing: 0.1,
  checkpointEvery: 200,
};

/** The encoder's weights as stored in a package's encoder graph (its initializers). */
export function encoderWeights(encoder: Uint8Array, m: ModelConfig): ParamStore {
  const at = weightsIn(encoder, 'encoder.onnx', m).at;
  const store = new ParamStore(encoderSpecs(m));
  for (const s of store.specs) {
    const where = at.get(s.name);
    if (!where) throw new Error(`the package's encoder has no weights for ${s.name}`);
    // A copy (a Buffer's slice is a view, and its offset need not be 4-aligned).
    const bytes = new Uint8Array(encoder.subarray(where.offset, where.offset + where.length));
    store.view(s.name).set(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4));
  }
  return store;
}

/**
 * The starting parameters: the package's encoder, or a seeded draw of it (the stream of `ijepa
 * eval`'s random-init baseline, so the same seed gives the same encoder there), and a fresh head.
 */
export function initialParams(m: ModelConfig, classes: number, seed: number, encoder?: ParamStore): ParamStore {
  const p = ParamStore.init(finetuneSpecs(m, classes), seed, 'random-init');
  if (encoder) p.data.set(encoder.data, 0);
  return p;
}

/** Pad (size / 8 px, CIFAR's 4 at 32) of the random translations. */
export const padOf = (size: number) => Math.max(1, Math.round(size / 8));

/**
 * A training image as the step sees it: flipped with probability ½ and shifted by up to the pad
 * in each direction, the uncovered border black (CIFAR's zero-padded random crop); the draws are a
 * function of (seed, epoch, item), so a resumed run draws the same.
 */
export function augmentRgb(rgb: Uint8Array, size: number, rng: Rng, out: Uint8Array): Uint8Array {
  const pad = padOf(size);
  const flip = rng.next() < 0.5;
  const dx = rng.int(2 * pad + 1) - pad;
  const dy = rng.int(2 * pad + 1) - pad;
  out.fill(0);
  for (let y = 0; y < size; y++) {
    const sy = y + dy;
    if (sy < 0 || sy >= size) continue;
    for (let x = 0; x < size; x++) {
      const sx0 = x + dx;
      if (sx0 < 0 || sx0 >= size) continue;
      const sx = flip ? size - 1 - sx0 : sx0;
      const o = 3 * (y * size + x);
      const i = 3 * (sy * size + sx);
      out[o] = rgb[i];
      out[o + 1] = rgb[i + 1];
      out[o + 2] = rgb[i + 2];
    }
  }
  return out;
}

/** Soft targets: (1 − ε) on the label, ε spread evenly over all classes. */
export function smoothTargets(
  labels: ArrayLike<number>,
  classes: number,
  eps: number,
  out: Float32Array,
): Float32Array {
  const off = eps / classes;
  out.fill(off, 0, labels.length * classes);
  for (let i = 0; i < labels.length; i++) out[i * classes + labels[i]] += 1 - eps;
  return out.subarray(0, labels.length * classes);
}

function paramFeeds(p: ParamStore): Record<string, Tensor> {
  return Object.fromEntries(p.specs.map((s) => [ONLINE + s.name, new Tensor('float32', p.view(s.name), s.shape)]));
}

/** The fixed standardisation of the pooled embedding the head reads (graph.ts). */
export interface FeatureScale {
  mean: Float32Array;
  std: Float32Array;
}

const scaleFeeds = (s: FeatureScale) => ({
  [FEAT_MEAN]: new Tensor('float32', s.mean, [s.mean.length]),
  [FEAT_STD]: new Tensor('float32', s.std, [s.std.length]),
});

/** Logits [n, C] of the forward graph for normalised CHW images. */
export async function finetuneLogits(
  session: Session,
  p: ParamStore,
  scale: FeatureScale,
  images: Float32Array,
  n: number,
  m: ModelConfig,
): Promise<Float32Array> {
  const out = await session.run({
    images: new Tensor('float32', images, [n, m.channels, m.imageSize, m.imageSize]),
    ...paramFeeds(p),
    ...scaleFeeds(scale),
  });
  return out.logits.data as Float32Array;
}

/** Smallest std the standardisation divides by (a value constant over the images). */
const STD_FLOOR = 1e-6;

/** Per-value mean and std of the starting encoder's pooled embedding over the (unaugmented) training images. */
export async function pooledScale(
  session: Session,
  p: ParamStore,
  rgb: Uint8Array[],
  pre: Preprocess,
  m: ModelConfig,
): Promise<FeatureScale> {
  const d = m.dim;
  const plane = 3 * m.imageSize * m.imageSize;
  const B = 256;
  const buf = new Float32Array(B * plane);
  const identity = { mean: new Float32Array(d), std: new Float32Array(d).fill(1) };
  const sum = new Float64Array(d);
  const sq = new Float64Array(d);
  for (let from = 0; from < rgb.length; from += B) {
    const n = Math.min(B, rgb.length - from);
    for (let i = 0; i < n; i++) normalizeChw(rgb[from + i], pre, buf, i * plane);
    const out = await session.run({
      images: new Tensor('float32', buf.subarray(0, n * plane), [n, m.channels, m.imageSize, m.imageSize]),
      ...paramFeeds(p),
      ...scaleFeeds(identity),
    });
    const pooled = out.pooled.data as Float32Array;
    for (let i = 0; i < n * d; i++) {
      sum[i % d] += pooled[i];
      sq[i % d] += pooled[i] * pooled[i];
    }
  }
  const mean = Float32Array.from(sum, (s) => s / rgb.length);
  const std = Float32Array.from(sq, (s, j) =>
    Math.max(STD_FLOOR, Math.sqrt(Math.max(0, s / rgb.length - mean[j] ** 2))),
  );
  return { mean, std };
}

interface Decoded {
  rgb: Uint8Array[];
  labels: number[];
}

async function decodeAll(images: LabeledImages): Promise<Decoded> {
  const all: Decoded = { rgb: [], labels: [] };
  for await (const b of images.batches(256)) {
    all.rgb.push(...b.rgb);
    all.labels.push(...b.labels);
  }
  return all;
}

function checkOptions(o: FinetuneOptions, s: FinetuneSettings): void {
  const bad = (msg: string) => {
    throw new Error(msg);
  };
  const positiveInt = (v: number, name: string) =>
    (Number.isInteger(v) && v >= 1) || bad(`${name} must be an integer ≥ 1, got ${v}`);
  positiveInt(s.batch, '--batch');
  positiveInt(s.threads, '--threads');
  if (!(s.epochs > 0)) bad(`--epochs must be positive, got ${s.epochs}`);
  if (!(s.lr > 0)) bad(`--lr must be positive, got ${s.lr}`);
  if (!(s.weightDecay >= 0)) bad(`--weight-decay must be ≥ 0, got ${s.weightDecay}`);
  if (!(s.layerDecay > 0 && s.layerDecay <= 1)) bad(`--layer-decay must be in (0, 1], got ${s.layerDecay}`);
  if (!(s.warmupEpochs >= 0)) bad(`--warmup-epochs must be ≥ 0, got ${s.warmupEpochs}`);
  if (!(s.labelSmoothing >= 0 && s.labelSmoothing < 1))
    bad(`--label-smoothing must be in [0, 1), got ${s.labelSmoothing}`);
  if (s.timeBudgetMin !== null && !(s.timeBudgetMin > 0)) bad(`--time-budget must be positive, got ${s.timeBudgetMin}`);
  if (!(s.beta1 >= 0 && s.beta1 < 1 && s.beta2 >= 0 && s.beta2 < 1)) bad('betas must be in [0, 1)');
  if (o.checkpointEvery !== undefined) positiveInt(o.checkpointEvery, 'checkpointEvery');
}

/** Settings that must agree for a checkpoint to be continued (threads and the budget's clock may differ). */
const RESUME_KEYS = [
  'model',
  'modelContentHash',
  'randomInit',
  'data',
  'test',
  'validation',
  'limit',
  'epochs',
  'timeBudgetMin',
  'batch',
  'lr',
  'weightDecay',
  'beta1',
  'beta2',
  'layerDecay',
  'warmupEpochs',
  'labelSmoothing',
  'augment',
  'seed',
] as const;

interface State {
  step: number;
  epoch: number;
  cursor: number;
  imagesSeen: number;
  elapsedSec: number;
  plan: Plan | null;
  lossSum: number;
  lossCount: number;
  finalLoss: number;
}

export async function runFinetune(o: FinetuneOptions): Promise<FinetuneResult> {
  const log = o.log ?? ((s: string) => console.error(s));
  const D = FINETUNE_DEFAULTS;
  const pkg = readPackage(o.model);
  const source = pkg.manifest;
  const m = modelConfig(source);
  const seed = o.seed ?? 0;
  const [beta1, beta2] = o.betas ?? D.betas;
  const threads = o.threads ?? 1;
  const settings: FinetuneSettings = {
    model: resolve(o.model),
    modelContentHash: source.contentHash,
    randomInit: o.randomInit ?? false,
    data: resolve(o.data),
    test: o.test ? resolve(o.test) : null,
    validation: o.validation ?? false,
    limit: o.limit ?? null,
    testLimit: o.testLimit ?? null,
    epochs: o.epochs ?? D.epochs,
    timeBudgetMin: o.timeBudgetMin ?? null,
    batch: o.batch ?? D.batch,
    lr: o.lr ?? D.lr,
    weightDecay: o.weightDecay ?? D.weightDecay,
    beta1,
    beta2,
    layerDecay: o.layerDecay ?? D.layerDecay,
    warmupEpochs: o.warmupEpochs ?? D.warmupEpochs,
    labelSmoothing: o.labelSmoothing ?? D.labelSmoothing,
    augment: o.augment ?? true,
    seed,
    threads,
  };
  checkOptions(o, settings);
  const ckptPath = join(o.out, FINETUNE_CHECKPOINT);
  if (!o.resume) {
    if (existsSync(join(o.out, MANIFEST)))
      throw new Error(`${o.out} already holds a model package; choose another --out (or --resume a run there)`);
    if (existsSync(ckptPath))
      throw new Error(`${o.out} holds an unfinished fine-tuning run; pass --resume to continue it`);
  } else if (!existsSync(ckptPath)) throw new Error(`--resume: no ${FINETUNE_CHECKPOINT} in ${o.out}`);

  const sp = labeledSplits({ ...o, seed });
  const classes = sp.classes.length;
  const p: Preprocess = source.preprocess;
  if (p.size !== m.imageSize)
    throw new Error(`${o.model}: preprocess size ${p.size} is not the encoder's ${m.imageSize}`);
  const train = await decodeAll(await LabeledImages.open(sp.train, sp.trainItems, p, { log }));
  const n = train.rgb.length;
  if (n < 1) throw new Error(`${o.data}: no readable training images`);
  const batch = Math.min(settings.batch, n);
  const specs = finetuneSpecs(m, classes);
  const layout = new ParamStore(specs);
  const opt = new AdamW(
    layout.size,
    layout.decayMask(),
    { beta1, beta2, eps: 1e-8 },
    layerScales(layout, m, settings.layerDecay),
  );
  // Whole batches only: every step has the same shape, and one drawn late in an epoch is no
  // smaller than the others.
  const spe = Math.floor(n / batch);
  const epochPlan = planByEpochs(spe, 1, settings.epochs, Math.min(settings.warmupEpochs, settings.epochs));
  let params: ParamStore;
  let scale: FeatureScale;
  let state: State;
  if (o.resume) {
    const ck = readCheckpoint(ckptPath);
    const was = ck.meta.settings as FinetuneSettings;
    for (const k of RESUME_KEYS)
      if (was[k] !== settings[k])
        throw new Error(`--resume: ${k} was ${JSON.stringify(was[k])}, now ${JSON.stringify(settings[k])}`);
    params = new ParamStore(specs, ck.arrays.get('params'));
    scale = { mean: ck.arrays.get('featMean')!, std: ck.arrays.get('featStd')! };
    opt.m.set(ck.arrays.get('m')!);
    opt.v.set(ck.arrays.get('v')!);
    opt.t = ck.meta.adamT as number;
    state = ck.meta.state as State;
    log(`resuming at step ${state.step} (epoch ${state.epoch}, ${state.elapsedSec.toFixed(0)} s trained)`);
  } else {
    params = initialParams(m, classes, seed, settings.randomInit ? undefined : encoderWeights(pkg.file('encoder'), m));
    const forward = await createSession(finetuneGraph(m, classes, false), { threads });
    try {
      scale = await pooledScale(forward, params, train.rgb, p, m);
    } finally {
      await forward.release();
    }
    state = {
      step: 0,
      epoch: 0,
      cursor: 0,
      imagesSeen: 0,
      elapsedSec: 0,
      plan: null,
      lossSum: 0,
      lossCount: 0,
      finalLoss: Number.NaN,
    };
  }
  const budget =
    settings.timeBudgetMin !== null
      ? new BudgetFit(epochPlan, settings.timeBudgetMin * 60, {
          plan: state.plan,
          step: state.step,
          elapsedSec: state.elapsedSec,
        })
      : null;
  const planNow = () => budget?.plan ?? epochPlan;
  const schedule = (plan: Plan): ScheduleConfig => ({
    totalSteps: plan.totalSteps,
    warmupSteps: plan.warmupSteps,
    ...(plan.from ? { from: plan.from } : {}),
    startLr: 0,
    peakLr: settings.lr,
    finalLr: 0,
    weightDecay: [settings.weightDecay, settings.weightDecay],
    emaMomentum: [0, 0],
  });
  const save = () =>
    writeCheckpoint(ckptPath, { settings, state: { ...state, plan: budget?.plan ?? null }, adamT: opt.t }, [
      ['params', params.data],
      ['m', opt.m],
      ['v', opt.v],
      ['featMean', scale.mean],
      ['featStd', scale.std],
    ]);

  mkdirSync(o.out, { recursive: true });
  log(
    `fine-tuning ${settings.randomInit ? `a random init of ${source.id}` : source.id} on ${n} labeled images, ${classes} classes: ${epochPlan.totalSteps} steps of ${batch} over ${settings.epochs} epochs${budget ? ` or ${settings.timeBudgetMin} min` : ''}; ${cpuHardware(threads)}`,
  );
  const plane = 3 * m.imageSize * m.imageSize;
  const images = new Float32Array(batch * plane);
  const targets = new Float32Array(batch * classes);
  const aug = new Uint8Array(m.imageSize * m.imageSize * 3);
  const grad = new Float32Array(params.size);
  const labels = new Int32Array(batch);
  const every = o.checkpointEvery ?? D.checkpointEvery;
  const step = await createSession(finetuneGraph(m, classes, true), { threads });
  const started = performance.now();
  const elapsed0 = state.elapsedSec;
  const seen0 = state.imagesSeen;
  let lastLog = started;
  let order = state.step < planNow().totalSteps ? Rng.for(seed, 'finetune-order', state.epoch).permutation(n) : null;
  try {
    while (state.step < planNow().totalSteps) {
      const t0 = performance.now();
      for (let i = 0; i < batch; i++) {
        const item = order![state.cursor * batch + i];
        const rgb = settings.augment
          ? augmentRgb(train.rgb[item], m.imageSize, Rng.for(seed, 'finetune', state.epoch, item), aug)
          : train.rgb[item];
        normalizeChw(rgb, p, images, i * plane);
        labels[i] = train.labels[item];
      }
      const out = await step.run({
        images: new Tensor('float32', images, [batch, m.channels, m.imageSize, m.imageSize]),
        targets: new Tensor('float32', smoothTargets(labels, classes, settings.labelSmoothing, targets), [
          batch,
          classes,
        ]),
        ...paramFeeds(params),
        ...scaleFeeds(scale),
      });
      for (const s of specs) grad.set(out[GRAD + s.name].data as Float32Array, params.offsets.get(s.name));
      const plan = planNow();
      const lr = learningRate(state.step, schedule(plan));
      opt.step(params.data, grad, lr, settings.weightDecay);
      const loss = (out.loss.data as Float32Array)[0];
      state.step++;
      state.imagesSeen += batch;
      state.lossSum += loss;
      state.lossCount++;
      state.finalLoss = loss;
      if (++state.cursor === spe) {
        state.cursor = 0;
        state.epoch++;
        order = Rng.for(seed, 'finetune-order', state.epoch).permutation(n);
      }
      const now = performance.now();
      state.elapsedSec = elapsed0 + (now - started) / 1000;
      const refit = budget?.observe(state.step, (now - t0) / 1000, state.elapsedSec);
      if (refit) log(refit);
      const done = state.step >= planNow().totalSteps;
      if (state.step % every === 0 || done) save();
      if (now - lastLog > 10_000 || done || state.step === 1) {
        const ips = (state.imagesSeen - seen0) / Math.max(1e-9, (now - started) / 1000);
        const line = `step ${state.step}/${planNow().totalSteps} epoch ${(state.step / spe).toFixed(2)} loss ${(state.lossSum / state.lossCount).toFixed(4)} lr ${lr.toExponential(2)} ${ips.toFixed(1)} img/s`;
        if (o.plain ?? true) log(line);
        else process.stderr.write(`\r${line}${done ? '\n' : ''}`);
        state.lossSum = 0;
        state.lossCount = 0;
        lastLog = now;
      }
      o.onStep?.(state.step);
    }
  } finally {
    await step.release();
  }
  if (state.step === 0) save();

  // Score the held-out images with the forward graph.
  const forward = await createSession(finetuneGraph(m, classes, false), { threads });
  const testImages = await LabeledImages.open(sp.test, sp.testItems, p, { log, keep: false });
  const pred: number[] = [];
  const truth: number[] = [];
  try {
    const B = 256;
    const buf = new Float32Array(B * plane);
    for await (const b of testImages.batches(B)) {
      if (!b.rgb.length) continue;
      b.rgb.forEach((rgb, i) => normalizeChw(rgb, p, buf, i * plane));
      const logits = await finetuneLogits(
        forward,
        params,
        scale,
        buf.subarray(0, b.rgb.length * plane),
        b.rgb.length,
        m,
      );
      for (let i = 0; i < b.rgb.length; i++) {
        let best = 0;
        for (let k = 1; k < classes; k++) if (logits[i * classes + k] > logits[i * classes + best]) best = k;
        pred.push(best);
        truth.push(b.labels[i]);
      }
    }
  } finally {
    await forward.release();
  }
  const report = classificationReport(Int32Array.from(pred), Int32Array.from(truth), classes);
  const result: FinetuneResult = {
    accuracy: report.accuracy,
    macroF1: report.macroF1,
    perClass: report.perClass.map((c, k) => ({ name: sp.classes[k], ...c })),
    trainCount: n,
    testCount: pred.length,
    testSplit: `${sp.testSplit}; ${describeTest(sp)}`,
    steps: state.step,
    epochs: state.step / spe,
    imagesSeen: state.imagesSeen,
    seconds: state.elapsedSec,
    imagesPerSec: state.imagesSeen / Math.max(1e-9, state.elapsedSec),
    finalLoss: state.finalLoss,
    settings,
    hardware: cpuHardware(threads),
  };
  writeFinetuned(o, source, m, params, scale, sp.classes, result);
  log(
    `top-1 accuracy ${(100 * result.accuracy).toFixed(2)}%   macro-F1 ${(100 * result.macroF1).toFixed(2)}% on ${result.testCount} images of ${sp.testSplit}`,
  );
  return result;
}

/** The package: the fine-tuned encoder, the head as a linear probe, the source's manifest with new files and provenance. */
function writeFinetuned(
  o: FinetuneOptions,
  source: Manifest,
  m: ModelConfig,
  params: ParamStore,
  scale: FeatureScale,
  classes: string[],
  r: FinetuneResult,
): void {
  const enc = new ParamStore(encoderSpecs(m), params.data.subarray(0, new ParamStore(encoderSpecs(m)).size));
  const w = params.view(HEAD_W);
  const c = classes.length;
  const head = probeSchema.parse({
    classes,
    dim: m.dim,
    readout: 'mean',
    mean: Array.from(scale.mean),
    std: Array.from(scale.std),
    weights: classes.map((_, k) => Array.from({ length: m.dim }, (_, j) => w[j * c + k])),
    bias: Array.from(params.view(HEAD_B)),
    metrics: { accuracy: r.accuracy, macroF1: r.macroF1, split: r.testSplit, count: r.testCount },
  });
  const files: Record<string, Uint8Array> = {
    'encoder.onnx': encoderGraph(m, enc),
    'probe.json': new TextEncoder().encode(`${JSON.stringify(head)}\n`),
  };
  const described: Manifest['files'] = {
    encoder: describeFile('encoder.onnx', files['encoder.onnx']),
    probe: describeFile('probe.json', files['probe.json']),
  };
  const s = r.settings;
  const manifest: Manifest = {
    ...source,
    id: basename(resolve(o.out)),
    contentHash: contentHash(described),
    files: described,
    classes,
    training: s.randomInit
      ? {
          data: `none (random init of ${source.id}'s architecture, seed ${s.seed})`,
          steps: 0,
          imagesSeen: 0,
          seed: s.seed,
          elapsedSec: 0,
          exportedAt: new Date().toISOString(),
        }
      : source.training,
    finetune: {
      ...(s.randomInit ? {} : { from: { id: source.id, contentHash: source.contentHash } }),
      data: s.data,
      labeled: r.trainCount,
      epochs: r.epochs,
      steps: r.steps,
      imagesSeen: r.imagesSeen,
      elapsedSec: Math.round(r.seconds),
      settings: s,
    },
  };
  // The checkpoint stays beside the package (writePackage replaces the directory).
  files[FINETUNE_CHECKPOINT] = readFileSync(join(o.out, FINETUNE_CHECKPOINT));
  files[FINETUNE_RESULT] = new TextEncoder().encode(`${JSON.stringify(r, null, 2)}\n`);
  writePackage(o.out, manifest, files);
}
