/**
 * `ijepa probe`: frozen, average-pooled encoder features (onnxruntime, the package's own graph and
 * preprocessing) → multinomial logistic regression → accuracy, macro-F1, per-class table; the head
 * is written into the package as probe.json.
 */
import cliProgress from 'cli-progress';
import type { Dataset } from './data/dataset.ts';
import { openDataset } from './data/open.ts';
import { classificationReport, fitLogReg, standardize, standardizer } from './logreg.ts';
import { Rng } from './rng.ts';
import { Embedder } from '../serve/core/embedder.ts';
import { toRgb } from '../serve/format/preprocess.ts';
import { probeSchema, type ProbeHead } from '../serve/format/probe.ts';
import { contentHash, describeFile, writePackage } from '../serve/format/package.ts';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface Features {
  x: Float32Array;
  y: Int32Array;
  n: number;
  skipped: number;
}

const BATCH = 64;

/** Pooled features and labels for the given items (all by default); unreadable images are skipped. */
export async function extractFeatures(embedder: Embedder, ds: Dataset, items: number[], log: (s: string) => void, progress = false): Promise<Features> {
  const d = embedder.manifest.embeddingDim;
  const x = new Float32Array(items.length * d);
  const y = new Int32Array(items.length);
  let n = 0;
  let skipped = 0;
  const bar = progress ? new cliProgress.SingleBar({ format: 'features |{bar}| {value}/{total} images | ETA {eta_formatted}', hideCursor: true }, cliProgress.Presets.shades_classic) : null;
  bar?.start(items.length, 0);
  for (let start = 0; start < items.length; start += BATCH) {
    const idx = items.slice(start, start + BATCH);
    const decoded = await Promise.allSettled(idx.map(async (i) => toRgb(await ds.read(i), embedder.manifest.preprocess)));
    const ok: Uint8Array[] = [];
    const labels: number[] = [];
    decoded.forEach((r, k) => {
      if (r.status === 'fulfilled') {
        ok.push(r.value);
        labels.push(ds.label(idx[k]) ?? -1);
      } else {
        skipped++;
        log(`warning: skipped unreadable image ${ds.describe(idx[k])}: ${(r.reason as Error).message.split('\n')[0]}`);
      }
    });
    if (ok.length) {
      const e = await embedder.embed(ok);
      x.set(e.pooled, n * d);
      y.set(labels, n);
      n += ok.length;
    }
    bar?.update(Math.min(items.length, start + BATCH));
  }
  bar?.stop();
  return { x: x.subarray(0, n * d), y: y.subarray(0, n), n, skipped };
}

export interface ProbeOptions {
  model: string;
  data: string;
  test?: string;
  l2: number;
  limit?: number;
  seed: number;
  log?: (s: string) => void;
  progress?: boolean;
}

export interface ProbeResult {
  trainCount: number;
  testCount: number;
  testSplit: string;
  accuracy: number;
  macroF1: number;
  perClass: { name: string; precision: number; recall: number; f1: number; support: number }[];
  iterations: number;
  converged: boolean;
}

function labeled(ds: Dataset, what: string): string[] {
  if (!ds.classes) throw new Error(`${what} has no labels (need class sub-folders, STL-10 *_y.bin, or IDX labels)`);
  return ds.classes;
}

export async function runProbe(o: ProbeOptions): Promise<ProbeResult> {
  const log = o.log ?? ((s: string) => console.error(s));
  const embedder = await Embedder.open(o.model);
  try {
    const train = openDataset(o.data, 'train');
    const classes = labeled(train, o.data);
    let test: Dataset;
    let testItems: number[];
    let trainItems = [...Array(train.size).keys()];
    let testSplit: string;
    const testDs = o.test ? openDataset(o.test, 'test') : tryTestSplit(o.data);
    if (testDs) {
      test = testDs;
      labeled(test, o.test ?? o.data);
      testItems = [...Array(test.size).keys()];
      testSplit = o.test ?? `${o.data} (test split)`;
    } else {
      // No separate test split: hold out 20% of the labeled data, seeded.
      const perm = Array.from(Rng.for(o.seed, 'probe-split').permutation(train.size));
      const cut = Math.floor(train.size * 0.8);
      trainItems = perm.slice(0, cut);
      testItems = perm.slice(cut);
      test = train;
      testSplit = `${o.data} (seeded 20% hold-out)`;
    }
    if (o.limit && o.limit < trainItems.length) trainItems = Array.from(Rng.for(o.seed, 'probe-limit').permutation(trainItems.length).subarray(0, o.limit), (i) => trainItems[i]);
    const d = embedder.manifest.embeddingDim;
    const tr = await extractFeatures(embedder, train, trainItems, log, o.progress);
    const te = await extractFeatures(embedder, test, testItems, log, o.progress);
    const s = standardizer(tr.x, tr.n, d);
    const fit = fitLogReg(standardize(tr.x, tr.n, d, s), tr.y, tr.n, d, classes.length, { l2: o.l2, maxIter: 500, tol: 1e-4 });
    const xs = standardize(te.x, te.n, d, s);
    const pred = new Int32Array(te.n);
    for (let i = 0; i < te.n; i++) {
      let best = -Infinity;
      for (let k = 0; k < classes.length; k++) {
        let v = fit.bias[k];
        for (let j = 0; j < d; j++) v += fit.weights[k * d + j] * xs[i * d + j];
        if (v > best) {
          best = v;
          pred[i] = k;
        }
      }
    }
    const report = classificationReport(pred, te.y, classes.length);
    const head: ProbeHead = probeSchema.parse({
      classes, dim: d, mean: Array.from(s.mean), std: Array.from(s.std),
      weights: classes.map((_, k) => Array.from(fit.weights.subarray(k * d, (k + 1) * d))), bias: Array.from(fit.bias),
      metrics: { accuracy: report.accuracy, macroF1: report.macroF1, split: testSplit, count: te.n },
    });
    writeProbe(o.model, embedder, head);
    return {
      trainCount: tr.n, testCount: te.n, testSplit, accuracy: report.accuracy, macroF1: report.macroF1,
      perClass: report.perClass.map((c, k) => ({ name: classes[k], ...c })), iterations: fit.iterations, converged: fit.converged,
    };
  } finally {
    await embedder.close();
  }
}

function tryTestSplit(data: string): Dataset | undefined {
  for (const f of ['t10k-images-idx3-ubyte', 't10k-images-idx3-ubyte.gz', 'test_X.bin']) if (existsSync(join(data, f))) return openDataset(data, 'test');
  return undefined;
}

/** Rewrites the package with probe.json added (and the class names in the manifest). */
function writeProbe(dir: string, embedder: Embedder, head: ProbeHead): void {
  const m = embedder.manifest;
  const files: Record<string, Uint8Array> = {};
  for (const [key, f] of Object.entries(m.files)) if (f && key !== 'probe') files[f.path] = readFileSync(join(dir, f.path));
  const probeBytes = new TextEncoder().encode(JSON.stringify(head) + '\n');
  files['probe.json'] = probeBytes;
  const described = { ...m.files, probe: describeFile('probe.json', probeBytes) };
  writePackage(dir, { ...m, files: described, classes: head.classes, contentHash: contentHash(described) }, files);
}
