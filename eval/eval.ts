/**
 * `ijepa eval`: can a probe tell the trained encoder from the same network at random
 * initialisation and from raw pixels? The headline reads the mean-pooled embedding, standardised,
 * with a linear probe and a cosine kNN (score.ts), and the frozen patch tokens with an attentive
 * probe (attentive.ts); each for the trained encoder, the identical architecture at random init,
 * and the normalised pixels. Grid readouts are reported apart: dense high-dimensional features
 * probe well at random init too. Deterministic given the seed, but for the timings.
 */
import type { Device } from '../runtime/device.ts';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Embedder } from '../runtime/embedder.ts';
import { normalizeChw } from '../format/preprocess.ts';
import type { Manifest } from '../format/manifest.ts';
import { LabeledImages } from './images.ts';
import {
  extractEncoded,
  describeL2,
  describeTest,
  fitAndScore,
  labeledSplits,
  type Features,
  type L2,
  type SplitOptions,
} from './probe.ts';
import { scoreFeatures } from './score.ts';
import {
  attentiveHeads,
  ATTENTIVE_BATCH,
  ATTENTIVE_EPOCHS,
  ATTENTIVE_GRID,
  fitAndScoreAttentive,
  type AttentiveGrid,
} from './attentive.ts';
import { readoutDim, type Readout } from '../format/readout.ts';
import { encoderGraph } from '../onnx/inference.ts';
import { encoderSpecs } from '../model/vit.ts';
import type { ModelConfig } from '../model/presets.ts';
import { ParamStore } from '../model/params.ts';

export interface EvalOptions extends SplitOptions {
  /** Where the encoders run. */
  device?: Device;
  model: string;
  /** Linear-probe readouts for the frozen encoders (default: mean, the headline; grids are reported apart). */
  readouts?: Readout[];
  /** Skip the random-init and raw-pixel rows (a study computes them once per dataset). */
  noBaselines?: boolean;
  noKnn?: boolean;
  /** Skip the attentive probe (it trains one head per grid point and encoder: the slowest part). */
  noAttentive?: boolean;
  /** The attentive probe's epochs (default ATTENTIVE_EPOCHS), heads (default attentiveHeads) and learning-rate × weight-decay grid. */
  attentiveEpochs?: number;
  attentiveHeads?: number;
  attentiveGrid?: AttentiveGrid;
  /** onnxruntime threads for both encoders and the probes (the CLI's default: all cores). */
  threads: number;
  /** Progress bars (images/s, ETA) on stderr. */
  progress?: boolean;
  l2: L2;
  k: number;
  temperature: number;
  out?: string;
  log?: (s: string) => void;
}

export type FeatureSet = 'trained' | 'random-init' | 'pixels';
export type ProbeKind = 'linear' | 'knn' | 'attentive';

export interface EvalRow {
  method: string;
  /** The feature set as older reports name it: ijepa (the package's encoder) | random-init | pixels. */
  kind: 'ijepa' | 'random-init' | 'pixels';
  features: FeatureSet;
  probe: ProbeKind;
  /** What the linear probe or kNN reads (attentive: the patch tokens; pixels: none). */
  readout?: Readout;
  accuracy: number;
  macroF1: number;
  /** The linear probe's L2 penalty (chosen on the training images when `auto`). */
  l2?: number;
  k?: number;
  temperature?: number;
  /** The attentive probe's settings, chosen on the training images. */
  lr?: number;
  weightDecay?: number;
  epochs?: number;
  /** Wall time of the probe (its selection, fit and scoring; not the feature extraction). */
  seconds: number;
}

const KIND: Record<FeatureSet, EvalRow['kind']> = { trained: 'ijepa', 'random-init': 'random-init', pixels: 'pixels' };

/** The model under test, named by the objective that trained it (packages that predate the record: I-JEPA). */
const SUBJECT: Record<string, string> = {
  ijepa: 'I-JEPA',
  views: 'multi-view (LeJEPA)',
  lejepa: 'LeJEPA',
  mae: 'MAE',
  hybrid: 'I-JEPA + LeJEPA',
};

const since = (t0: number) => (performance.now() - t0) / 1000;

const GRID_LABEL = 'grid readout (dense, high-dimensional: scores high even at random init)';

export function modelConfig(m: Manifest): ModelConfig {
  const a = m.architecture;
  return {
    imageSize: a.imageSize,
    patchSize: a.patchSize,
    channels: 3,
    dim: a.dim,
    depth: a.depth,
    heads: a.heads,
    mlpRatio: a.mlpRatio,
    predDim: a.predDim,
    predDepth: a.predDepth,
    predHeads: a.heads,
    eps: a.eps,
  };
}

/** Normalised pixels (the encoder's input) as features. */
async function pixelFeatures(images: LabeledImages, m: Manifest): Promise<Features> {
  const p = m.preprocess;
  const d = 3 * p.size * p.size;
  const x = new Float32Array(images.size * d);
  const y = new Int32Array(images.size);
  let n = 0;
  for await (const b of images.batches(256)) {
    b.rgb.forEach((rgb, k) => {
      normalizeChw(rgb, p, x, (n + k) * d);
      y[n + k] = b.labels[k];
    });
    n += b.rgb.length;
  }
  return { x: x.subarray(0, n * d), y: y.subarray(0, n), n, skipped: images.size - n };
}

export async function runEval(o: EvalOptions): Promise<{ rows: EvalRow[]; markdown: string }> {
  const log = o.log ?? ((s: string) => console.error(s));
  const started = performance.now();
  const sp = labeledSplits(o);
  // Before the probes, not after: a missing --out directory must not cost a finished evaluation.
  const out = o.out ?? o.model;
  mkdirSync(out, { recursive: true });
  const c = sp.classes.length;
  const readouts = o.readouts ?? ['mean'];
  const session = { threads: o.threads, device: o.device };
  const embedder = await Embedder.open(o.model, session);
  const m = embedder.manifest;
  const d = m.embeddingDim;
  const timings: Record<string, number> = {};
  // Decoded once: both encoders and the pixel baseline read the same images. Without the
  // baselines they are read once, so they are decoded as they are embedded.
  let t0 = performance.now();
  const opened = { log, progress: o.progress, keep: !o.noBaselines };
  const train = await LabeledImages.open(sp.train, sp.trainItems, m.preprocess, { ...opened, what: 'train images' });
  const test = await LabeledImages.open(sp.test, sp.testItems, m.preprocess, { ...opened, what: 'test images' });
  timings.decode = since(t0);
  const rows: EvalRow[] = [];
  const objective: string = m.training.objective ?? 'ijepa';
  const subject = SUBJECT[objective] ?? objective;
  const names: Record<FeatureSet, string> = {
    trained: subject,
    'random-init': 'random-init same architecture',
    pixels: 'raw pixels',
  };
  const knnLabel = `kNN (k=${o.k}, cosine, T=${o.temperature})`;
  const grid = o.attentiveGrid ?? ATTENTIVE_GRID;
  const epochs = o.attentiveEpochs ?? ATTENTIVE_EPOCHS;
  const heads = o.attentiveHeads ?? attentiveHeads(d, m.architecture.heads);
  if (d % heads) throw new Error(`attentive probe: ${heads} heads do not divide the embedding's ${d} values`);
  const add = (r: Omit<EvalRow, 'kind'> & { features: FeatureSet }) => {
    const row = { ...r, kind: KIND[r.features] } as EvalRow;
    rows.push(row);
    log(`${row.method}: ${(100 * row.accuracy).toFixed(2)}% (${row.seconds.toFixed(1)} s)`);
  };
  const headline = async (features: FeatureSet, tr: Features, te: Features, dim: number, maxIter?: number) => {
    const s = await scoreFeatures(tr, te, dim, c, {
      l2: o.l2,
      k: o.noKnn ? 0 : o.k,
      temperature: o.temperature,
      maxIter,
      threads: o.threads,
      noLinear: features !== 'pixels' && !readouts.includes('mean'),
    });
    const frozen = features === 'pixels' ? '' : 'frozen, ';
    if (s.linear)
      add({
        method: `${names[features]} (${frozen}linear probe)`,
        features,
        probe: 'linear',
        ...(features === 'pixels' ? {} : { readout: 'mean' as const }),
        accuracy: s.linear.accuracy,
        macroF1: s.linear.macroF1,
        l2: s.linear.l2,
        seconds: s.linear.seconds,
      });
    if (s.knn)
      add({
        method: `${names[features]} (${frozen}kNN k=${o.k}, cosine, T=${o.temperature})`,
        features,
        probe: 'knn',
        ...(features === 'pixels' ? {} : { readout: 'mean' as const }),
        accuracy: s.knn.accuracy,
        macroF1: s.knn.macroF1,
        k: o.k,
        temperature: o.temperature,
        seconds: s.knn.seconds,
      });
  };
  /** Every row of one frozen encoder, from one pass over the images. */
  const encoderRows = async (e: Embedder, features: FeatureSet) => {
    const name = names[features];
    const extract = [...new Set([...readouts, ...(o.noKnn ? [] : (['mean'] as Readout[]))])];
    t0 = performance.now();
    const what = { progress: o.progress, tokens: !o.noAttentive };
    const tr = await extractEncoded(e, train, extract, { ...what, what: `${name}: train` });
    const te = await extractEncoded(e, test, extract, { ...what, what: `${name}: test` });
    timings[`extract ${features}`] = since(t0);
    if (readouts.includes('mean') || !o.noKnn)
      await headline(features, tr.readouts.get('mean')!, te.readouts.get('mean')!, d);
    if (tr.tokens && te.tokens) {
      t0 = performance.now();
      const a = await fitAndScoreAttentive(
        tr.tokens,
        te.tokens,
        { tokens: m.patches.rows * m.patches.cols, dim: d, heads, classes: c },
        { grid, epochs, batch: ATTENTIVE_BATCH, seed: o.seed, threads: o.threads },
      );
      add({
        method: `${name} (frozen, attentive probe)`,
        features,
        probe: 'attentive',
        accuracy: a.report.accuracy,
        macroF1: a.report.macroF1,
        lr: a.lr,
        weightDecay: a.weightDecay,
        epochs: a.epochs,
        seconds: since(t0),
      });
    }
    for (const r of readouts.filter((r) => r !== 'mean')) {
      t0 = performance.now();
      const { report, l2 } = await fitAndScore(tr.readouts.get(r)!, te.readouts.get(r)!, readoutDim(r, d), c, o.l2);
      add({
        method: `${name} (frozen, linear probe, ${r} readout)`,
        features,
        probe: 'linear',
        readout: r,
        accuracy: report.accuracy,
        macroF1: report.macroF1,
        l2,
        seconds: since(t0),
      });
    }
  };
  try {
    await encoderRows(embedder, 'trained');

    if (!o.noBaselines) {
      const cfg = modelConfig(m);
      const random = await Embedder.fromGraph(
        m,
        encoderGraph(cfg, ParamStore.init(encoderSpecs(cfg), o.seed, 'random-init')),
        session,
      );
      try {
        await encoderRows(random, 'random-init');
      } finally {
        await random.close();
      }
      t0 = performance.now();
      const ptr = await pixelFeatures(train, m);
      const pte = await pixelFeatures(test, m);
      timings['extract pixels'] = since(t0);
      await headline('pixels', ptr, pte, 3 * m.preprocess.size ** 2, 200);
    }
    timings.total = since(started);
    const report = {
      model: m.id,
      split: sp.split,
      testSplit: sp.testSplit,
      trainCount: sp.trainItems.length,
      testCount: sp.testItems.length,
      testTotal: sp.testTotal,
      seed: o.seed,
      l2: o.l2,
      k: o.k,
      temperature: o.temperature,
      attentive: o.noAttentive ? null : { grid, epochs, batch: ATTENTIVE_BATCH, heads },
      rows,
      gaps: gaps(rows),
      timings,
      training: m.training,
    };
    const markdown = renderMarkdown(report, sp, describeTest(sp), knnLabel);
    writeFileSync(join(out, 'eval.md'), markdown);
    writeFileSync(join(out, 'eval.json'), JSON.stringify(report, null, 2));
    return { rows, markdown };
  } finally {
    await embedder.close();
  }
}

/** Trained minus random-init top-1 accuracy, per headline probe, in points. */
export function gaps(rows: EvalRow[]): Partial<Record<ProbeKind, number>> {
  const headline = (r: EvalRow) => r.probe === 'attentive' || r.readout === 'mean';
  const out: Partial<Record<ProbeKind, number>> = {};
  for (const probe of ['linear', 'knn', 'attentive'] as const) {
    const find = (f: FeatureSet) => rows.find((r) => r.features === f && r.probe === probe && headline(r));
    const [a, b] = [find('trained'), find('random-init')];
    if (a && b) out[probe] = Number((100 * (a.accuracy - b.accuracy)).toFixed(2));
  }
  return out;
}

const pct = (x: number) => `${(100 * x).toFixed(2)}%`;
const PROBE_NAME: Record<ProbeKind, string> = { linear: 'linear', knn: 'kNN', attentive: 'attentive' };

function settings(r: EvalRow): string {
  if (r.probe === 'linear') return `L2 ${r.l2}`;
  if (r.probe === 'knn') return `k=${r.k}, T=${r.temperature}`;
  return `lr ${r.lr}, weight decay ${r.weightDecay}, ${r.epochs} epochs`;
}

function renderMarkdown(
  r: {
    model: string;
    trainCount: number;
    seed: number;
    l2: L2;
    attentive: { grid: AttentiveGrid; epochs: number; batch: number; heads: number } | null;
    rows: EvalRow[];
    gaps: Partial<Record<ProbeKind, number>>;
    timings: Record<string, number>;
    training: Manifest['training'];
  },
  sp: { split: string; testSplit: string },
  scored: string,
  knnLabel: string,
): string {
  const FEATURES: Record<FeatureSet, string> = {
    trained: 'trained encoder',
    'random-init': 'same architecture, random init',
    pixels: 'raw pixels',
  };
  const isGrid = (x: EvalRow) => x.readout !== undefined && x.readout !== 'mean';
  const headline = r.rows.filter((x) => !isGrid(x));
  const grids = r.rows.filter(isGrid);
  const row = (x: EvalRow) =>
    `| ${FEATURES[x.features]} | ${PROBE_NAME[x.probe]} | ${pct(x.accuracy)} | ${pct(x.macroF1)} | ${settings(x)} | ${x.seconds.toFixed(1)} s |`;
  const gapText = (['linear', 'knn', 'attentive'] as const)
    .filter((p) => r.gaps[p] !== undefined)
    .map((p) => `${PROBE_NAME[p]} ${r.gaps[p]! >= 0 ? '+' : ''}${r.gaps[p]!.toFixed(2)}`)
    .join(', ');
  const a = r.attentive;
  const t = r.training;
  const lines = [
    `Evaluation of ${r.model}, scored on the ${sp.split} split: ${scored} of ${sp.testSplit}; probes fit on ${r.trainCount} training images; seed ${r.seed}.`,
    '',
    `Headline: the mean-pooled embedding, standardised with the probe-training images' per-feature mean and std, under a linear probe (${describeL2(r.l2)}) and a ${knnLabel}; ` +
      (a
        ? `and an attentive probe over the frozen patch tokens (a learned query per head, ${a.heads} heads over keys and values projected from the tokens, LayerNorm, linear classifier; AdamW, cosine learning rate, ${a.epochs} epochs, batch ${a.batch}; learning rate from ${a.grid.lr.join(', ')} × weight decay from ${a.grid.weightDecay.join(', ')} chosen on a seeded 20% of the training images). `
        : 'no attentive probe (--no-attentive). ') +
      'Each for the trained encoder, the identical architecture at random initialisation, and the normalised pixels.',
    '',
    '| features | probe | top-1 accuracy | macro-F1 | chosen on training images | probe time |',
    '| --- | --- | --- | --- | --- | --- |',
    ...headline.map(row),
    '',
    ...(gapText ? [`Learned minus random init (points of top-1 accuracy): ${gapText}.`, ''] : []),
    ...(grids.length
      ? [
          `Linear probe, ${GRID_LABEL}:`,
          '',
          '| features | readout | top-1 accuracy | macro-F1 | L2 | probe time |',
          '| --- | --- | --- | --- | --- | --- |',
          ...grids.map(
            (x) =>
              `| ${FEATURES[x.features]} | ${x.readout} | ${pct(x.accuracy)} | ${pct(x.macroF1)} | ${x.l2} | ${x.seconds.toFixed(1)} s |`,
          ),
          '',
        ]
      : []),
    `Wall time: ${Object.entries(r.timings)
      .map(([k, v]) => `${k} ${v.toFixed(1)} s`)
      .join(', ')}.`,
    '',
    `pre-training: ${t.imagesSeen} images seen, ${t.steps} steps, ${(t.elapsedSec / 60).toFixed(1)} min (${t.hardware ?? 'hardware not recorded'}); data ${t.data}`,
    '',
  ];
  return lines.join('\n');
}
