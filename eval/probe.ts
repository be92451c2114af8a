/**
 * `ijepa probe`: frozen, average-pooled encoder features (onnxruntime, the package's own graph and
 * preprocessing) → multinomial logistic regression → accuracy, macro-F1, per-class table; the head
 * is written into the package as probe.json.
 */
import type { Device } from '../runtime/device.ts';
import type { Dataset } from '../train/data/dataset.ts';
import { openDataset } from '../train/data/open.ts';
import { classificationReport, fitLogReg, standardize, standardizer, type LogRegModel } from './logreg.ts';
import { Rng } from '../model/rng.ts';
import { Embedder } from '../runtime/embedder.ts';
import { LabeledImages, progressBar } from './images.ts';
import { probeSchema, type ProbeHead } from '../format/probe.ts';
import { contentHash, describeFile, writePackage } from '../format/package.ts';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { readFeatures, readoutDim, type Readout } from '../format/readout.ts';
import { validationSplit } from '../train/data/split.ts';
import { attentiveHead, attentiveHeads, fitAndScoreAttentive, type Tokens } from './attentive.ts';

export interface Features {
  x: Float32Array;
  y: Int32Array;
  n: number;
  skipped: number;
}

/** Images per encoder run: the server's CPU batch size. */
const BATCH = 64;

/** Probe features (see readout.ts) and labels of the readable images. */
export async function extractFeatures(
  embedder: Embedder,
  images: LabeledImages,
  o: { readout?: Readout; progress?: boolean; what?: string } = {},
): Promise<Features> {
  const readout = o.readout ?? 'mean';
  return (await extractReadouts(embedder, images, [readout], o)).get(readout)!;
}

/** Several readouts from one pass of the encoder over the images. */
export async function extractReadouts(
  embedder: Embedder,
  images: LabeledImages,
  readouts: Readout[],
  o: { progress?: boolean; what?: string } = {},
): Promise<Map<Readout, Features>> {
  return (await extractEncoded(embedder, images, readouts, o)).readouts;
}

/**
 * Readouts and, with `tokens`, every image's frozen patch tokens [n, N, D] (the attentive
 * probe's input: 64 × 192 float32 per vit-tiny image, 0.5 GB per 10k images), from one pass.
 */
export async function extractEncoded(
  embedder: Embedder,
  images: LabeledImages,
  readouts: Readout[],
  o: { progress?: boolean; what?: string; tokens?: boolean } = {},
): Promise<{ readouts: Map<Readout, Features>; tokens?: Tokens }> {
  const { rows, cols } = embedder.manifest.patches;
  const dim = embedder.manifest.embeddingDim;
  const per = rows * cols * dim;
  const xs = new Map(readouts.map((r) => [r, new Float32Array(images.size * readoutDim(r, dim))]));
  const tokens = o.tokens ? new Float32Array(images.size * per) : undefined;
  const y = new Int32Array(images.size);
  let n = 0;
  let skipped = 0;
  const bar = progressBar(o.what ?? 'features', images.size, o.progress);
  for await (const b of images.batches(BATCH)) {
    skipped += b.skipped;
    if (b.rgb.length) {
      const e = await embedder.embed(b.rgb);
      for (const [r, x] of xs)
        x.set(
          r === 'mean' ? e.pooled : readFeatures(r, e.tokens, b.rgb.length, rows, cols, dim),
          n * readoutDim(r, dim),
        );
      tokens?.set(e.tokens, n * per);
      y.set(b.labels, n);
      n += b.rgb.length;
    }
    bar?.advance(b.rgb.length + b.skipped);
  }
  bar?.stop();
  return {
    readouts: new Map(
      [...xs].map(([r, x]) => [r, { x: x.subarray(0, n * readoutDim(r, dim)), y: y.subarray(0, n), n, skipped }]),
    ),
    ...(tokens ? { tokens: { x: tokens.subarray(0, n * per), y: y.subarray(0, n), n } } : {}),
  };
}

export interface ProbeOptions extends SplitOptions {
  /** Where the encoder runs. */
  device?: Device;
  /** onnxruntime threads of the encoder (the CLI's default: all cores). */
  threads: number;
  model: string;
  readout?: Readout;
  l2: L2;
  /** Fit the attentive head over the patch tokens (attentive.ts) instead; `readout` and `l2` are then unused. */
  attentive?: { epochs?: number; heads?: number };
  log?: (s: string) => void;
  progress?: boolean;
}

/** A probe's fit and its scores on the test (or validation) images. */
export interface ProbeResult {
  kind: 'linear' | 'attentive';
  trainCount: number;
  testCount: number;
  /** Test images in the split, and whether --test-limit subsampled them. */
  testTotal: number;
  testSubsampled: boolean;
  testSplit: string;
  accuracy: number;
  macroF1: number;
  perClass: { name: string; precision: number; recall: number; f1: number; support: number }[];
  /** Linear: L-BFGS iterations, and the L2 penalty of the fit (chosen on the training images under `auto`). */
  iterations?: number;
  converged?: boolean;
  l2?: number;
  /** Attentive: what was chosen on the training images, and the shape. */
  lr?: number;
  weightDecay?: number;
  epochs?: number;
  heads?: number;
}

function labeled(ds: Dataset, what: string): string[] {
  if (!ds.classes) throw new Error(`${what} has no labels (need class sub-folders, STL-10 *_y.bin, or IDX labels)`);
  return ds.classes;
}

export interface Splits {
  train: Dataset;
  trainItems: number[];
  test: Dataset;
  testItems: number[];
  classes: string[];
  /** Which split the probes are scored on. */
  split: 'test' | 'validation';
  /** Where the scored images come from, in words. */
  testSplit: string;
  /** Test items before --test-limit. */
  testTotal: number;
}

/** Which labeled items a probe trains and is scored on. */
export interface SplitOptions {
  /** Labeled training data. */
  data: string;
  /** Labeled test data (default: the source's own test split, else the validation split of `data`). */
  test?: string;
  /** Score on the fixed validation split of `data` even where a test split exists (data/split.ts); the test split is not touched. */
  validation?: boolean;
  /** Seeds the hold-out and the subsamples. */
  seed: number;
  /** At most this many training items (seeded subsample). */
  limit?: number;
  /** At most this many test items (seeded subsample). */
  testLimit?: number;
}

/**
 * Labeled train/test items: with `validation`, the fixed validation split of the training data
 * (data/split.ts; the test split is not touched); else `test` if given, else the source's own
 * test split (IDX t10k, STL-10 test), else the validation split (image class folders have only
 * training images): the images a `--holdout` pre-training never saw, so the probes are scored
 * where the encoder was not trained. `limit` and `testLimit` subsample the training and test
 * items, seeded.
 */
export function labeledSplits(o: SplitOptions): Splits {
  const { data, test: testPath, seed, limit, validation = false, testLimit } = o;
  const train = openDataset(data, 'train');
  const classes = labeled(train, data);
  let trainItems = [...Array(train.size).keys()];
  let test = train;
  let testItems: number[];
  let testSplit: string;
  const testDs = validation ? undefined : testPath ? openDataset(testPath, 'test') : tryTestSplit(data);
  if (testDs) {
    test = testDs;
    labeled(test, testPath ?? data);
    testItems = [...Array(test.size).keys()];
    testSplit = testPath ?? `${data} (test split)`;
  } else {
    const v = validationSplit(train.size);
    trainItems = v.train;
    testItems = v.validation;
    testSplit = `${data} (validation split: ${testItems.length} training images held out${validation ? '' : '; the data has no test split'})`;
  }
  const sample = (items: number[], n: number | undefined, purpose: string) =>
    n && n < items.length
      ? Array.from(Rng.for(seed, purpose).permutation(items.length).subarray(0, n), (i) => items[i])
      : items;
  const testTotal = testItems.length;
  return {
    train,
    trainItems: sample(trainItems, limit, 'probe-limit'),
    test,
    testItems: sample(testItems, testLimit, 'probe-test-limit'),
    classes,
    split: testDs ? 'test' : 'validation',
    testSplit,
    testTotal,
  };
}

/** How a report names its scored images: all of the split, or a seeded subsample of it. */
export function describeTest(sp: Splits): string {
  return sp.testItems.length < sp.testTotal
    ? `${sp.testItems.length} of ${sp.testTotal} ${sp.split} images (seeded subsample)`
    : `${sp.testItems.length} ${sp.split} images (the whole split)`;
}

export async function runProbe(o: ProbeOptions): Promise<ProbeResult> {
  const log = o.log ?? ((s: string) => console.error(s));
  const embedder = await Embedder.open(o.model, { device: o.device, threads: o.threads });
  try {
    const sp = labeledSplits(o);
    if (o.attentive) return await runAttentiveProbe(o, o.attentive, embedder, sp, log);
    const { classes, testSplit } = sp;
    const readout = o.readout ?? 'mean';
    const d = readoutDim(readout, embedder.manifest.embeddingDim);
    const p = embedder.manifest.preprocess;
    // One pass each: nothing reads them twice, so they are decoded as they are embedded.
    const streamed = { log, progress: false };
    const train = await LabeledImages.open(sp.train, sp.trainItems, p, { ...streamed, keep: false });
    const test = await LabeledImages.open(sp.test, sp.testItems, p, { ...streamed, keep: false });
    const tr = await extractFeatures(embedder, train, { readout, progress: o.progress, what: 'train features' });
    const te = await extractFeatures(embedder, test, { readout, progress: o.progress, what: 'test features' });
    const { report, fit, scale: s, l2 } = await fitAndScore(tr, te, d, classes.length, o.l2);
    const head: ProbeHead = probeSchema.parse({
      classes,
      dim: d,
      readout,
      mean: Array.from(s.mean),
      std: Array.from(s.std),
      weights: classes.map((_, k) => Array.from(fit.weights.subarray(k * d, (k + 1) * d))),
      bias: Array.from(fit.bias),
      metrics: { accuracy: report.accuracy, macroF1: report.macroF1, split: testSplit, count: te.n, l2 },
    });
    writeProbe(o.model, embedder, head);
    return {
      ...scored('linear', sp, { train: tr.n, test: te.n }, report),
      iterations: fit.iterations,
      converged: fit.converged,
      l2,
    };
  } finally {
    await embedder.close();
  }
}

/** What a probe's report says of any head: the split, the counts and the scores. */
function scored(
  kind: ProbeResult['kind'],
  sp: Splits,
  counts: { train: number; test: number },
  report: ReturnType<typeof classificationReport>,
): Omit<ProbeResult, 'iterations' | 'converged' | 'l2' | 'lr' | 'weightDecay' | 'epochs' | 'heads'> {
  return {
    kind,
    trainCount: counts.train,
    testCount: counts.test,
    testTotal: sp.testTotal,
    testSubsampled: sp.testItems.length < sp.testTotal,
    testSplit: sp.testSplit,
    accuracy: report.accuracy,
    macroF1: report.macroF1,
    perClass: report.perClass.map((c, k) => ({ name: sp.classes[k], ...c })),
  };
}

/** `ijepa probe --attentive`: the attentive head over the frozen patch tokens, stored as probe.json. */
async function runAttentiveProbe(
  o: ProbeOptions,
  a: NonNullable<ProbeOptions['attentive']>,
  embedder: Embedder,
  sp: Splits,
  log: (s: string) => void,
): Promise<ProbeResult> {
  const m = embedder.manifest;
  const { classes, testSplit } = sp;
  const streamed = { log, progress: false, keep: false };
  const train = await LabeledImages.open(sp.train, sp.trainItems, m.preprocess, streamed);
  const test = await LabeledImages.open(sp.test, sp.testItems, m.preprocess, streamed);
  const what = { progress: o.progress, tokens: true };
  const tr = (await extractEncoded(embedder, train, [], { ...what, what: 'train tokens' })).tokens!;
  const te = (await extractEncoded(embedder, test, [], { ...what, what: 'test tokens' })).tokens!;
  const heads = a.heads ?? attentiveHeads(m.embeddingDim, m.architecture.heads);
  const shape = { tokens: m.patches.rows * m.patches.cols, dim: m.embeddingDim, heads, classes: classes.length };
  const fit = await fitAndScoreAttentive(tr, te, shape, { epochs: a.epochs, seed: o.seed, threads: o.threads });
  const { report } = fit;
  const metrics = { accuracy: report.accuracy, macroF1: report.macroF1, split: testSplit, count: te.n };
  writeProbe(o.model, embedder, probeSchema.parse(attentiveHead(fit.model, classes, metrics)));
  return {
    ...scored('attentive', sp, { train: tr.n, test: te.n }, report),
    lr: fit.lr,
    weightDecay: fit.weightDecay,
    epochs: fit.epochs,
    heads,
  };
}

/** The L2 penalties `auto` chooses from, strongest first (the order of the warm-started path). */
export const L2_GRID = [1, 1e-1, 1e-2, 1e-3, 1e-4];
/** A fixed L2 penalty, or `auto`: chosen per feature set on a split of the probe's training images. */
export type L2 = number | 'auto';

/** How a report states its probes' penalty. */
export function describeL2(l2: L2): string {
  return l2 === 'auto'
    ? `L2 chosen per probe from ${L2_GRID.join(', ')} on a seeded 20% of its training images`
    : `L2 ${l2}`;
}

function predict(fit: LogRegModel, xs: Float32Array, n: number, d: number): Int32Array {
  const pred = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let best = -Infinity;
    for (let k = 0; k < fit.classes; k++) {
      let v = fit.bias[k];
      for (let j = 0; j < d; j++) v += fit.weights[k * d + j] * xs[i * d + j];
      if (v > best) {
        best = v;
        pred[i] = k;
      }
    }
  }
  return pred;
}

function rowsOf(f: Features, rows: ArrayLike<number>, d: number): Features {
  const x = new Float32Array(rows.length * d);
  const y = new Int32Array(rows.length);
  for (let i = 0; i < rows.length; i++) {
    x.set(f.x.subarray(rows[i] * d, (rows[i] + 1) * d), i * d);
    y[i] = f.y[rows[i]];
  }
  return { x, y, n: rows.length, skipped: 0 };
}

/**
 * Chooses the L2 penalty without looking at the scored split: fits on a seeded 80% of the probe's
 * training features, scores the other 20%, for each penalty of the grid (strongest first, each fit
 * warm-started from the previous one), and keeps the best (ties: the stronger). A fixed penalty
 * favours some feature sets: at 1e-3 the 12,288-value grid8 readout of a random encoder overfits
 * 10k images by 4 points more than it does at 0.1, while a 3,072-value grid4 readout wants less.
 */
export async function selectL2(tr: Features, d: number, classes: number, maxIter: number) {
  const perm = Rng.for(0, 'probe-l2').permutation(tr.n);
  const cut = Math.floor(tr.n * 0.8);
  const fitRows = rowsOf(tr, perm.subarray(0, cut), d);
  const heldRows = rowsOf(tr, perm.subarray(cut), d);
  const scale = standardizer(fitRows.x, fitRows.n, d);
  const xs = standardize(fitRows.x, fitRows.n, d, scale);
  const held = standardize(heldRows.x, heldRows.n, d, scale);
  const scores: { l2: number; accuracy: number }[] = [];
  let init: LogRegModel | undefined;
  for (const l2 of L2_GRID) {
    init = await fitLogReg(xs, fitRows.y, fitRows.n, d, classes, { l2, maxIter, tol: 1e-4, init });
    scores.push({
      l2,
      accuracy: classificationReport(predict(init, held, heldRows.n, d), heldRows.y, classes).accuracy,
    });
  }
  const best = scores.reduce((a, b) => (b.accuracy > a.accuracy ? b : a));
  return { l2: best.l2, scores };
}

/** Standardise on the train features, fit the L2 logistic regression, score the test features. */
export async function fitAndScore(tr: Features, te: Features, d: number, classes: number, l2: L2, maxIter = 500) {
  const selection = l2 === 'auto' ? await selectL2(tr, d, classes, maxIter) : undefined;
  const chosen = selection?.l2 ?? (l2 as number);
  const scale = standardizer(tr.x, tr.n, d);
  const fit = await fitLogReg(standardize(tr.x, tr.n, d, scale), tr.y, tr.n, d, classes, {
    l2: chosen,
    maxIter,
    tol: 1e-4,
  });
  const pred = predict(fit, standardize(te.x, te.n, d, scale), te.n, d);
  return { report: classificationReport(pred, te.y, classes), fit, scale, l2: chosen, selection: selection?.scores };
}

export function tryTestSplit(data: string): Dataset | undefined {
  for (const f of ['t10k-images-idx3-ubyte', 't10k-images-idx3-ubyte.gz', 'test_X.bin'])
    if (existsSync(join(data, f))) return openDataset(data, 'test');
  return undefined;
}

/** Rewrites the package with probe.json added (and the class names in the manifest). */
function writeProbe(dir: string, embedder: Embedder, head: ProbeHead): void {
  const m = embedder.manifest;
  const files: Record<string, Uint8Array> = {};
  for (const [key, f] of Object.entries(m.files))
    if (f && key !== 'probe') files[f.path] = readFileSync(join(dir, f.path));
  const probeBytes = new TextEncoder().encode(`${JSON.stringify(head)}\n`);
  files['probe.json'] = probeBytes;
  const described = { ...m.files, probe: describeFile('probe.json', probeBytes) };
  writePackage(dir, { ...m, files: described, classes: head.classes, contentHash: contentHash(described) }, files);
}
