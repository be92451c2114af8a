/** The kNN probe, the feature-file format and scoring precomputed features with eval's probes. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { knnPredict, type KnnData } from '../../eval/knn.ts';
import { FeatureFileError, readFeatureFile, writeFeatureFile } from '../../eval/features.ts';
import { scoreFeatures } from '../../eval/score.ts';
import { Rng } from '../../model/rng.ts';

function clusters(n: number, d: number, classes: number, seed: number, spread = 1): KnnData {
  const centres = Rng.for(0, 'centres');
  const mu = Float32Array.from({ length: classes * d }, () => centres.normal());
  const rng = Rng.for(seed, 'points');
  const x = new Float32Array(n * d);
  const y = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    y[i] = rng.int(classes);
    for (let j = 0; j < d; j++) x[i * d + j] = mu[y[i] * d + j] + spread * rng.normal();
  }
  return { x, y, n };
}

/** The definition, in float64: sort every training row by cosine similarity, vote exp(sim / T) among the first k. */
function reference(tr: KnnData, te: KnnData, d: number, classes: number, k: number, t: number): Int32Array {
  const norm = (x: Float32Array, i: number) => Math.sqrt(x.subarray(i * d, (i + 1) * d).reduce((a, v) => a + v * v, 0));
  const pred = new Int32Array(te.n);
  for (let q = 0; q < te.n; q++) {
    const sims = Array.from({ length: tr.n }, (_, i) => {
      let s = 0;
      for (let j = 0; j < d; j++) s += te.x[q * d + j] * tr.x[i * d + j];
      return s / (norm(te.x, q) * norm(tr.x, i));
    });
    const top = [...sims.keys()].sort((a, b) => sims[b] - sims[a]).slice(0, k);
    const votes = new Float64Array(classes);
    for (const i of top) votes[tr.y[i]] += Math.exp(sims[i] / t);
    pred[q] = votes.indexOf(Math.max(...votes));
  }
  return pred;
}

test('kNN predicts as the definition does, in blocks of queries of any size', async () => {
  const d = 12;
  const tr = clusters(400, d, 5, 1, 1.5);
  const te = clusters(150, d, 5, 2, 1.5);
  const want = reference(tr, te, d, 5, 7, 0.1);
  for (const blockValues of [400 * 150, 400 * 16, 1]) {
    const got = await knnPredict(tr, te, d, 5, 7, 0.1, { threads: 1, blockValues });
    const agree = got.filter((p, i) => p === want[i]).length;
    // float32 similarities may swap two neighbours a float64 sort orders the other way.
    assert.ok(agree >= te.n - 1, `${agree} of ${te.n} agree (blocks of ${blockValues} values)`);
  }
});

test('kNN weighs votes by exp(sim / T): one close neighbour outvotes two far ones at a low temperature only', async () => {
  // The query is [1, 0]; class 0 has one row at angle 0.1, class 1 two rows at angle 0.5.
  const row = (a: number) => [Math.cos(a), Math.sin(a)];
  const tr = { x: Float32Array.from([...row(0.1), ...row(0.5), ...row(-0.5)]), y: Int32Array.from([0, 1, 1]), n: 3 };
  const te = { x: Float32Array.from([1, 0]), y: Int32Array.from([0]), n: 1 };
  assert.deepEqual([...(await knnPredict(tr, te, 2, 2, 3, 0.05))], [0]);
  assert.deepEqual([...(await knnPredict(tr, te, 2, 2, 3, 10))], [1]);
  // k = 1: the nearest alone; k larger than the training set: all of it.
  assert.deepEqual([...(await knnPredict(tr, te, 2, 2, 1, 10))], [0]);
  assert.deepEqual([...(await knnPredict(tr, te, 2, 2, 50, 10))], [1]);
});

test('a feature file written by another program is read back as written, and scored by the linear probe and kNN', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'features-'));
  try {
    const d = 10;
    const tr = clusters(300, d, 3, 3, 0.7);
    const va = clusters(120, d, 3, 4, 0.7);
    writeFeatureFile(join(dir, 'train'), tr, d, ['a', 'b', 'c']);
    writeFeatureFile(join(dir, 'val'), va, d, 3);
    const a = readFeatureFile(join(dir, 'train'));
    const b = readFeatureFile(join(dir, 'val'));
    assert.deepEqual([a.n, a.dim, a.classes, a.names], [300, d, 3, ['a', 'b', 'c']]);
    assert.deepEqual([b.n, b.dim, b.classes, b.names], [120, d, 3, undefined]);
    assert.deepEqual(a.x, tr.x);
    assert.deepEqual(b.y, va.y);
    const s = await scoreFeatures(a, b, d, 3, { l2: 'auto', k: 20, temperature: 0.07, threads: 1 });
    assert.ok(s.linear!.accuracy > 0.9 && s.knn!.accuracy > 0.9, JSON.stringify(s));
    // Labels shuffled against the features: both probes fall to chance.
    const shuffled = { ...b, y: Int32Array.from(b.y, (_, i) => b.y[(i * 7) % b.n]) };
    const chance = await scoreFeatures(a, shuffled, d, 3, { l2: 0.01, k: 20, temperature: 0.07, threads: 1 });
    assert.ok(chance.linear!.accuracy < 0.5 && chance.knn!.accuracy < 0.5, JSON.stringify(chance));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a feature file whose sizes or labels disagree with its header is refused, naming the file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'features-'));
  try {
    const p = join(dir, 'f');
    writeFeatureFile(p, { x: new Float32Array(6), y: Int32Array.from([0, 1, 1]), n: 3 }, 2, 2);
    writeFileSync(`${p}.json`, JSON.stringify({ n: 4, dim: 2, classes: 2 }));
    assert.throws(
      () => readFeatureFile(p),
      (e: Error) => e instanceof FeatureFileError && /f\.x\.f32 has 24 bytes, the header says 32/.test(e.message),
    );
    writeFileSync(`${p}.json`, JSON.stringify({ n: 3, dim: 2, classes: 1 }));
    assert.throws(() => readFeatureFile(p), /f\.json/);
    writeFileSync(`${p}.json`, JSON.stringify({ n: 3, dim: 2, classes: 2 }));
    writeFileSync(`${p}.y.i32`, new Uint8Array(Int32Array.from([0, 2, 1]).buffer));
    assert.throws(() => readFeatureFile(p), /label 2 of image 1 is not in \[0, 2\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('ijepa score scores two feature files and prints JSON; files of different widths are refused', () => {
  const dir = mkdtempSync(join(tmpdir(), 'features-'));
  try {
    const d = 6;
    writeFeatureFile(join(dir, 'train'), clusters(200, d, 3, 5, 0.5), d, 3);
    writeFeatureFile(join(dir, 'val'), clusters(90, d, 3, 6, 0.5), d, 3);
    const bin = join(import.meta.dirname, '../../bin/ijepa.js');
    const args = ['score', '--train', join(dir, 'train'), '--val', join(dir, 'val'), '--threads', '1'];
    const r = spawnSync(process.execPath, [bin, ...args, '--k', '10'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.deepEqual([out.train, out.val, out.dim, out.classes, out.knn.k], [200, 90, d, 3, 10]);
    assert.ok(out.linear.accuracy > 0.9 && out.knn.accuracy > 0.9, r.stdout);
    writeFeatureFile(join(dir, 'wide'), clusters(90, d + 1, 3, 6), d + 1, 3);
    const bad = spawnSync(process.execPath, [bin, ...args.slice(0, 3), '--val', join(dir, 'wide')], {
      encoding: 'utf8',
    });
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /--train has 6 values and 3 classes per image, --val 7 and 3/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
