/**
 * The headline probes of one feature set, on features computed elsewhere: both read the features
 * standardised with the training rows' per-feature mean and std; a multinomial logistic regression
 * (its L2 penalty chosen on the training rows under `auto`) and a temperature-weighted cosine kNN.
 * `ijepa eval` scores each encoder and the pixels with it, and so can a script that dumped
 * another implementation's features (features.ts), with exactly the same probes.
 */
import type { Features, L2 } from './probe.ts';
import { fitAndScore } from './probe.ts';
import { classificationReport, standardize, standardizer } from './logreg.ts';
import { knnPredict } from './knn.ts';

export interface ProbeScore {
  accuracy: number;
  macroF1: number;
  /** Wall time of the probe (fit, selection and scoring). */
  seconds: number;
}

export interface ScoreOptions {
  l2: L2;
  /** kNN neighbours and temperature; `k: 0` skips kNN. */
  k: number;
  temperature: number;
  /** L-BFGS iterations of the linear probe. */
  maxIter?: number;
  /** onnxruntime threads of the kNN similarities. */
  threads?: number;
  /** Skip the linear probe. */
  noLinear?: boolean;
}

export interface FeatureScores {
  linear?: ProbeScore & { l2: number };
  knn?: ProbeScore & { k: number; temperature: number };
}

const seconds = (t0: number) => (performance.now() - t0) / 1000;

/** Linear probe and kNN of features `train` → `val` ([n, dim] rows, labels in [0, classes)). */
export async function scoreFeatures(
  train: Features,
  val: Features,
  dim: number,
  classes: number,
  o: ScoreOptions,
): Promise<FeatureScores> {
  const out: FeatureScores = {};
  if (!o.noLinear) {
    const t0 = performance.now();
    const { report, l2 } = await fitAndScore(train, val, dim, classes, o.l2, o.maxIter);
    out.linear = { accuracy: report.accuracy, macroF1: report.macroF1, l2, seconds: seconds(t0) };
  }
  if (o.k > 0) {
    const t0 = performance.now();
    const s = standardizer(train.x, train.n, dim);
    const tr = { x: standardize(train.x, train.n, dim, s), y: train.y, n: train.n };
    const va = { x: standardize(val.x, val.n, dim, s), y: val.y, n: val.n };
    const pred = await knnPredict(tr, va, dim, classes, o.k, o.temperature, { threads: o.threads });
    const report = classificationReport(pred, val.y, classes);
    out.knn = {
      accuracy: report.accuracy,
      macroF1: report.macroF1,
      k: o.k,
      temperature: o.temperature,
      seconds: seconds(t0),
    };
  }
  return out;
}
