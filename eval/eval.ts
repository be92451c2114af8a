/**
 * `ijepa eval`: the reference experiment's comparison on a labeled dataset — frozen I-JEPA
 * features vs the same architecture at random initialisation vs raw pixels, each with a linear
 * probe, plus a kNN classifier on the I-JEPA features. Deterministic given the seed.
 */
import type { Device } from '../runtime/device.ts';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Embedder } from '../runtime/embedder.ts';
import { normalizeChw } from '../format/preprocess.ts';
import type { Manifest } from '../format/manifest.ts';
import { LabeledImages } from './images.ts';
import { classificationReport } from './logreg.ts';
import {
  extractReadouts,
  describeL2,
  describeTest,
  fitAndScore,
  labeledSplits,
  type Features,
  type L2,
  type SplitOptions,
} from './probe.ts';
import { readoutDim, type Readout } from '../format/readout.ts';
import { encoderGraph } from '../onnx/inference.ts';
import { encoderSpecs } from '../model/vit.ts';
import type { ModelConfig } from '../model/presets.ts';
import { ParamStore } from '../model/params.ts';

export interface EvalOptions extends SplitOptions {
  /** Where the encoders run. */
  device?: Device;
  model: string;
  /** Probe readouts to report for the frozen encoders (default: mean). */
  readouts?: Readout[];
  /** Skip the random-init and raw-pixel rows (a study computes them once per dataset). */
  noBaselines?: boolean;
  noKnn?: boolean;
  /** onnxruntime threads for both encoders (the CLI's default: all cores). */
  threads: number;
  /** Progress bars (images/s, ETA) on stderr. */
  progress?: boolean;
  l2: L2;
  k: number;
  temperature: number;
  out?: string;
  log?: (s: string) => void;
}

export interface EvalRow {
  method: string;
  /** ijepa | random-init | pixels | knn */
  kind: string;
  readout?: Readout;
  accuracy: number;
  macroF1: number;
  /** The probe's L2 penalty (chosen on the training images when `auto`). */
  l2?: number;
}

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

/** Temperature-weighted cosine kNN (Wu et al. 2018): votes exp(sim / T) of the k nearest. */
export function knnPredict(
  tr: Features,
  te: Features,
  d: number,
  classes: number,
  k: number,
  temperature: number,
): Int32Array {
  const unit = (f: Features) => {
    const u = new Float32Array(f.x.length);
    for (let i = 0; i < f.n; i++) {
      let s = 0;
      for (let j = 0; j < d; j++) s += f.x[i * d + j] ** 2;
      const inv = 1 / Math.max(Math.sqrt(s), 1e-12);
      for (let j = 0; j < d; j++) u[i * d + j] = f.x[i * d + j] * inv;
    }
    return u;
  };
  const a = unit(tr);
  const b = unit(te);
  const pred = new Int32Array(te.n);
  const sims = new Float32Array(tr.n);
  for (let q = 0; q < te.n; q++) {
    for (let i = 0; i < tr.n; i++) {
      let s = 0;
      for (let j = 0; j < d; j++) s += b[q * d + j] * a[i * d + j];
      sims[i] = s;
    }
    const top = [...sims.keys()].sort((x, y) => sims[y] - sims[x]).slice(0, k);
    const votes = new Float64Array(classes);
    for (const i of top) votes[tr.y[i]] += Math.exp(sims[i] / temperature);
    pred[q] = votes.indexOf(Math.max(...votes));
  }
  return pred;
}

export async function runEval(o: EvalOptions): Promise<{ rows: EvalRow[]; markdown: string }> {
  const log = o.log ?? ((s: string) => console.error(s));
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
  // Decoded once: both encoders and the pixel baseline read the same images. Without the
  // baselines they are read once, so they are decoded as they are embedded.
  const opened = { log, progress: o.progress, keep: !o.noBaselines };
  const train = await LabeledImages.open(sp.train, sp.trainItems, m.preprocess, { ...opened, what: 'train images' });
  const test = await LabeledImages.open(sp.test, sp.testItems, m.preprocess, { ...opened, what: 'test images' });
  const rows: EvalRow[] = [];
  // The model under test, named by what trained it (packages that predate the record: I-JEPA).
  const subject = m.training.objective === 'views' ? 'multi-view (LeJEPA)' : 'I-JEPA';
  const label = (r: Readout) => (r === 'mean' ? 'linear probe' : `linear probe, ${r} readout`);
  /**
   * Linear-probe rows for one frozen encoder, every readout from one pass over the data; `also`
   * adds readouts extracted in the same pass without rows of their own (kNN's pooled features).
   */
  const probeRows = async (e: Embedder, kind: string, name: string, also: Readout[] = []) => {
    const extract = [...new Set([...readouts, ...also])];
    const tr = await extractReadouts(e, train, extract, { progress: o.progress, what: `${name}: train` });
    const te = await extractReadouts(e, test, extract, { progress: o.progress, what: `${name}: test` });
    for (const r of readouts) {
      const { report: rep, l2 } = await fitAndScore(tr.get(r)!, te.get(r)!, readoutDim(r, d), c, o.l2);
      rows.push({
        method: `${name} (frozen, ${label(r)})`,
        kind,
        readout: r,
        accuracy: rep.accuracy,
        macroF1: rep.macroF1,
        l2,
      });
      log(`${name}, ${r}: ${(100 * rep.accuracy).toFixed(2)}% (L2 ${l2})`);
    }
    return { tr: tr.get('mean'), te: te.get('mean') };
  };
  try {
    const pooled = await probeRows(embedder, 'ijepa', subject, o.noKnn ? [] : ['mean']);

    if (!o.noBaselines) {
      const cfg = modelConfig(m);
      const random = await Embedder.fromGraph(
        m,
        encoderGraph(cfg, ParamStore.init(encoderSpecs(cfg), o.seed, 'random-init')),
        session,
      );
      await probeRows(random, 'random-init', 'random-init same architecture');
      await random.close();

      const ptr = await pixelFeatures(train, m);
      const pte = await pixelFeatures(test, m);
      const { report: pix, l2 } = await fitAndScore(ptr, pte, 3 * m.preprocess.size ** 2, c, o.l2, 200);
      rows.push({ method: 'raw pixels (linear)', kind: 'pixels', accuracy: pix.accuracy, macroF1: pix.macroF1, l2 });
    }

    if (!o.noKnn) {
      const [tr, te] = [pooled.tr!, pooled.te!];
      const knn = classificationReport(knnPredict(tr, te, d, c, o.k, o.temperature), te.y, c);
      rows.push({
        method: `${subject} kNN (k=${o.k}, cosine, T=${o.temperature})`,
        kind: 'knn',
        accuracy: knn.accuracy,
        macroF1: knn.macroF1,
      });
    }
    const counts = { train: sp.trainItems.length, test: sp.testItems.length };
    const t = m.training;
    const budget = `pre-training: ${t.imagesSeen} images seen, ${t.steps} steps, ${(t.elapsedSec / 60).toFixed(1)} min (${t.hardware ?? 'hardware not recorded'}); data ${t.data}`;
    const markdown = [
      `Evaluation of ${m.id} on ${sp.testSplit}: ${describeTest(sp)}, ${counts.train} training images, seed ${o.seed}; ${describeL2(o.l2)}.`,
      '',
      '| method | top-1 accuracy | macro-F1 | probe L2 |',
      '| --- | --- | --- | --- |',
      ...rows.map(
        (r) =>
          `| ${r.method} | ${(100 * r.accuracy).toFixed(2)}% | ${(100 * r.macroF1).toFixed(2)}% | ${r.l2 ?? '-'} |`,
      ),
      '',
      budget,
      '',
    ].join('\n');
    writeFileSync(join(out, 'eval.md'), markdown);
    writeFileSync(
      join(out, 'eval.json'),
      JSON.stringify(
        {
          model: m.id,
          testSplit: sp.testSplit,
          trainCount: counts.train,
          testCount: counts.test,
          testTotal: sp.testTotal,
          seed: o.seed,
          l2: o.l2,
          rows,
          training: t,
        },
        null,
        2,
      ),
    );
    return { rows, markdown };
  } finally {
    await embedder.close();
  }
}
