/** The `ijepa train` command end to end: exact resume after kill -9, schedules per optimizer step, CLI errors. */
import { tempDir } from '../tmp.ts';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readCheckpoint } from '../../train/checkpoint.ts';
import { learningRate, planByEpochs } from '../../train/schedule.ts';
import { tinyModel } from '../helpers.ts';

const BIN = join(import.meta.dirname, '../../bin/ijepa.js');
const dir = tempDir('ijepa-cli-');
const data = join(dir, 'data');

function idx(dims: number[], bytes: Uint8Array): Buffer {
  const head = Buffer.alloc(4 + 4 * dims.length);
  head[2] = 0x08;
  head[3] = dims.length;
  dims.forEach((d, i) => head.writeUInt32BE(d, 4 + 4 * i));
  return Buffer.concat([head, Buffer.from(bytes)]);
}

// 40 16×16 grayscale images: smooth random blobs, enough structure for the loss to move.
const px = new Uint8Array(40 * 256);
for (let n = 0; n < 40; n++)
  for (let y = 0; y < 16; y++)
    for (let x = 0; x < 16; x++) {
      px[n * 256 + y * 16 + x] = Math.round(127 + 120 * Math.sin((x + n) / 3) * Math.cos((y * ((n % 5) + 1)) / 4));
    }
mkdirSync(data);
writeFileSync(join(data, 'train-images-idx3-ubyte'), idx([40, 16, 16], px));

const config = join(dir, 'tiny.json');
writeFileSync(
  config,
  JSON.stringify({
    model: tinyModel,
    batch: 8,
    chunk: 4,
    accum: 2,
    epochs: 10,
    maxSteps: 10,
    sigreg: { weight: 0.1 },
    optim: { warmupEpochs: 3 },
    checkpointEvery: 1,
    logEvery: 1,
    diagEvery: 5,
    masks: { numTargets: 2, targetScale: [0.1, 0.15], minKeep: 2 },
  }),
);

function run(args: string[]) {
  return spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 240_000 });
}

// A fixed recipe (the published one, with SIGReg from the config), so that changing the default does
// not change these runs (10 steps at its peak LR lower the loss; the default's gentler LR may not).
const trainArgs = (out: string) => [
  'train',
  '--data',
  data,
  '--out',
  out,
  '--config',
  config,
  '--recipe',
  'reference',
  '--plain',
];

/** Starts a run, SIGKILLs it once its checkpoint reaches step ≥ 3, and returns that step. */
async function killMidway(args: string[], out: string): Promise<number> {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: 'ignore' });
  const ck = join(out, 'checkpoint.bin');
  const deadline = Date.now() + 180_000;
  let killedAt = -1;
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
    if (!existsSync(ck)) continue;
    try {
      const step = (readCheckpoint(ck).meta.state as { step: number }).step;
      if (step >= 3) {
        child.kill('SIGKILL');
        killedAt = step;
        break;
      }
    } catch {
      /* mid-write by another name; the rename is atomic, so retry */
    }
  }
  await new Promise((r) => child.once('exit', r));
  assert.ok(killedAt >= 3 && killedAt < 10, `killed at step ${killedAt}`);
  return killedAt;
}

const metrics = (out: string) =>
  readFileSync(join(out, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));

test('resume after kill -9 reaches the same final weights as an uninterrupted run', async () => {
  const a = join(dir, 'runA');
  const ra = run(trainArgs(a));
  assert.equal(ra.status, 0, ra.stderr);
  assert.match(ra.stderr, /engine: onnxruntime/);

  const b = join(dir, 'runB');
  const ck = join(b, 'checkpoint.bin');
  await killMidway(trainArgs(b), b);
  const rb = run([...trainArgs(b), '--resume']);
  assert.equal(rb.status, 0, rb.stderr);
  assert.match(rb.stderr, /resuming/);

  const ca = readCheckpoint(join(a, 'checkpoint.bin'));
  const cb = readCheckpoint(ck);
  assert.equal((cb.meta.state as { step: number }).step, 10);
  for (const name of ['online', 'target', 'adam.m', 'adam.v']) {
    assert.deepEqual(cb.arrays.get(name), ca.arrays.get(name), `${name} differs after resume`);
  }
  const steps = metrics(b).map((l) => l.step);
  assert.deepEqual(
    steps,
    [...Array(10).keys()].map((i) => i + 1),
    'metrics have one line per optimizer step, no duplicates',
  );
});

test('checkpoints are interchangeable: a TF.js run resumed on onnxruntime follows the onnxruntime run', async () => {
  const c = join(dir, 'runC');
  const killedAt = await killMidway([...trainArgs(c), '--engine', 'tfjs'], c);
  const rc = run([...trainArgs(c), '--resume', '--engine', 'ort']);
  assert.equal(rc.status, 0, rc.stderr);
  assert.match(rc.stderr, /resuming[\s\S]*engine: onnxruntime/);
  const ref = metrics(join(dir, 'runA'));
  const mixed = metrics(c);
  assert.equal(mixed.length, 10);
  // Same maths on both engines (float32 rounding apart): the loss curves coincide step by step,
  // on both sides of the engine switch.
  mixed.forEach((l, i) =>
    assert.ok(
      Math.abs(l.loss - ref[i].loss) < 1e-4,
      `step ${l.step} (switched after ${killedAt}): ${l.loss} vs ${ref[i].loss}`,
    ),
  );
});

test('with --accum, schedules advance once per optimizer step, and diagnostics are logged', () => {
  const lines = readFileSync(join(dir, 'runA', 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  assert.equal(lines.length, 10);
  // 40 images / batch 8 = 5 batches per epoch; accum 2 → 2 optimizer steps per epoch; 10 epochs capped at 10 steps.
  const plan = planByEpochs(5, 2, 10, 3, 10);
  // The LR values come from the run's resolved config (the pinned recipe's); what is under test is the step they are taken at.
  const { optim, sigreg } = JSON.parse(readFileSync(join(dir, 'runA', 'config.json'), 'utf8'));
  const c = {
    ...plan,
    startLr: optim.startLr,
    peakLr: optim.lr,
    finalLr: optim.finalLr,
    weightDecay: optim.weightDecay,
    emaMomentum: optim.ema,
  };
  lines.forEach((l, i) => assert.ok(Math.abs(l.lr - learningRate(i, c)) < 1e-12, `step ${l.step}: lr ${l.lr}`));
  assert.equal(lines[9].images, 10 * 16);
  const diag = lines.find((l) => l.step === 5);
  for (const k of ['featStd', 'rankMe', 'emaGap', 'zeroLoss']) assert.ok(Number.isFinite(diag[k]), k);
  assert.ok(lines[9].loss < lines[0].loss, `loss ${lines[0].loss} → ${lines[9].loss}`);
  // The prediction loss is logged apart from SIGReg: it is what the zero-predictor loss compares with.
  assert.ok(sigreg.weight > 0);
  for (const l of lines)
    assert.ok(
      Math.abs(l.predLoss + sigreg.weight * l.sigreg - l.loss) < 1e-5 && l.predLoss < l.loss,
      `step ${l.step}: ${l.predLoss} + ${sigreg.weight} × ${l.sigreg} vs ${l.loss}`,
    );
});

test('CLI errors name the problem', () => {
  const bad = run(['train', '--data', data, '--out', join(dir, 'x'), '--batch', 'zero']);
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /--batch must be an integer/);
  const missing = run(['train', '--data', join(dir, 'nope'), '--out', join(dir, 'y')]);
  assert.match(missing.stderr, /data path .*nope does not exist/);
  const again = run(trainArgs(join(dir, 'runA')));
  assert.match(again.stderr, /already holds a checkpoint: pass --resume/);
  const badCfg = join(dir, 'bad.json');
  writeFileSync(badCfg, JSON.stringify({ optim: { lr: -1 } }));
  assert.match(run(['train', '--data', data, '--out', join(dir, 'z'), '--config', badCfg]).stderr, /optim\.lr/);
});

test('ijepa export writes a verified model package whose encoder runs in onnxruntime', async () => {
  const { readPackage, PackageError } = await import('../../format/package.ts');
  const { OnnxModel } = await import('../../runtime/model.ts');
  const out = join(dir, 'pkg');
  const r = run(['export', '--run', join(dir, 'runA'), '--out', out]);
  assert.equal(r.status, 0, r.stderr);
  const pkg = readPackage(out);
  assert.equal(pkg.manifest.id, 'pkg');
  assert.equal(pkg.manifest.training.steps, 10);
  assert.equal(pkg.manifest.training.objective, 'ijepa'); // eval names the method after it
  assert.deepEqual(pkg.manifest.patches, { size: 4, rows: 4, cols: 4 });
  const enc = await OnnxModel.load(pkg.file('encoder'));
  const res = await enc.run({ images: { data: new Float32Array(2 * 3 * 16 * 16).fill(0.5), dims: [2, 3, 16, 16] } });
  assert.deepEqual([...res.tokens.dims], [2, 16, tinyModel.dim]);
  assert.ok(res.pooled.data.every(Number.isFinite));
  await enc.release();
  // A modified file is refused with a clear message.
  const f = join(out, 'encoder.onnx');
  const bytes = readFileSync(f);
  bytes[bytes.length - 1] ^= 1;
  writeFileSync(f, bytes);
  assert.throws(
    () => readPackage(out),
    (e: Error) => e instanceof PackageError && /encoder\.onnx does not match its checksum/.test(e.message),
  );
  assert.match(run(['export', '--run', join(dir, 'nothing'), '--out', out]).stderr, /no checkpoint/);
});

test('ijepa probe fits a linear head on frozen features and stores it in the package', async () => {
  const { readPackage } = await import('../../format/package.ts');
  const { probeProbabilities, probeSchema } = await import('../../format/probe.ts');
  const out = join(dir, 'pkg-probe');
  assert.equal(run(['export', '--run', join(dir, 'runA'), '--out', out]).status, 0);
  // Two classes that differ in brightness and stripe direction; t10k-* is the test split.
  const labeledDir = join(dir, 'labeled');
  mkdirSync(labeledDir);
  const make = (n: number, seed: number) => {
    const imgs = new Uint8Array(n * 256);
    const labels = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      const c = (i + seed) % 2;
      labels[i] = c;
      for (let y = 0; y < 16; y++)
        for (let x = 0; x < 16; x++) {
          const stripe = c ? (x >> 1) % 2 : (y >> 1) % 2;
          imgs[i * 256 + y * 16 + x] = (c ? 60 : 140) + 80 * stripe + ((i * 7 + x * 3 + y) % 11);
        }
    }
    return { imgs, labels };
  };
  const trainSet = make(60, 0);
  const testSet = make(20, 1);
  writeFileSync(join(labeledDir, 'train-images-idx3-ubyte'), idx([60, 16, 16], trainSet.imgs));
  writeFileSync(join(labeledDir, 'train-labels-idx1-ubyte'), idx([60], trainSet.labels));
  writeFileSync(join(labeledDir, 't10k-images-idx3-ubyte'), idx([20, 16, 16], testSet.imgs));
  writeFileSync(join(labeledDir, 't10k-labels-idx1-ubyte'), idx([20], testSet.labels));
  const r = run(['probe', '--model', out, '--data', labeledDir]);
  assert.equal(r.status, 0, r.stderr);
  const acc = Number(/top-1 accuracy ([\d.]+)%/.exec(r.stdout)![1]);
  assert.ok(acc >= 90, r.stdout);
  assert.match(r.stdout, /20 test images, 60 train images/);
  const pkg = readPackage(out);
  assert.deepEqual(pkg.manifest.classes, ['0', '1']);
  const head = probeSchema.parse(JSON.parse(new TextDecoder().decode(pkg.file('probe'))));
  const p = probeProbabilities(head, new Float32Array(head.dim));
  assert.ok(Math.abs(p[0] + p[1] - 1) < 1e-9);
  const unlabeled = run(['probe', '--model', out, '--data', data]);
  assert.match(unlabeled.stderr, /has no labels/);
  // --attentive stores the attentive head over the patch tokens instead (on a copy: later tests read the linear one).
  const copy = join(dir, 'pkg-attentive');
  cpSync(out, copy, { recursive: true });
  const a = run(['probe', '--model', copy, '--data', labeledDir, '--attentive', '--attentive-epochs', '5']);
  assert.equal(a.status, 0, a.stderr);
  assert.match(
    a.stdout,
    /attentive probe on .*: 20 test images, 60 train images, 4 heads, lr [\d.e-]+, weight decay [\d.e-]+, 5 epochs/,
  );
  const attentive = probeSchema.parse(JSON.parse(new TextDecoder().decode(readPackage(copy).file('probe'))));
  assert.equal(attentive.kind, 'attentive');
  assert.ok(Number(/top-1 accuracy ([\d.]+)%/.exec(a.stdout)![1]) >= 0);
  const q = probeProbabilities(attentive, new Float32Array(16 * 32).fill(0.5));
  assert.ok(Math.abs(q[0] + q[1] - 1) < 1e-9);
});

test('ijepa eval reports linear, kNN and attentive probes of the trained and the random-init encoder, and linear and kNN of raw pixels, with sane numbers', async () => {
  const out = join(dir, 'pkg-probe');
  const evalDir = join(dir, 'eval', 'new');
  const r = run(['eval', '--model', out, '--data', join(dir, 'labeled'), '--out', evalDir, '--k', '5']);
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(readFileSync(join(evalDir, 'eval.json'), 'utf8'));
  type Row = { kind: string; features: string; probe: string; readout?: string; accuracy: number; seconds: number };
  assert.deepEqual(
    report.rows.map((x: Row) => `${x.features}/${x.probe}/${x.readout ?? '-'}`),
    [
      'trained/linear/mean',
      'trained/knn/mean',
      'trained/attentive/-',
      'random-init/linear/mean',
      'random-init/knn/mean',
      'random-init/attentive/-',
      'pixels/linear/-',
      'pixels/knn/-',
    ],
  );
  for (const row of report.rows) {
    assert.ok(row.accuracy >= 0 && row.accuracy <= 1 && row.macroF1 >= 0 && row.macroF1 <= 1, JSON.stringify(row));
    assert.ok(row.seconds >= 0, JSON.stringify(row));
  }
  // The two classes differ in brightness: raw pixels separate them perfectly.
  assert.equal(report.rows.find((x: Row) => x.features === 'pixels' && x.probe === 'linear').accuracy, 1);
  assert.equal(report.testCount, 20);
  assert.equal(report.split, 'test');
  // Each probe's penalty is chosen on its own training images (--l2 auto, the default).
  assert.equal(report.l2, 'auto');
  for (const row of report.rows.filter((x: Row) => x.probe === 'linear'))
    assert.ok([1, 0.1, 0.01, 0.001, 0.0001].includes(row.l2), JSON.stringify(row));
  const at = (features: string, probe: string) =>
    report.rows.find((x: Row) => x.features === features && x.probe === probe).accuracy;
  for (const probe of ['linear', 'knn', 'attentive'])
    assert.equal(report.gaps[probe], Number((100 * (at('trained', probe) - at('random-init', probe))).toFixed(2)));
  const md = readFileSync(join(evalDir, 'eval.md'), 'utf8');
  assert.match(md, /\| trained encoder \| linear \| [\d.]+% \| [\d.]+% \| L2 [\d.e-]+ \|/);
  assert.match(md, /\| same architecture, random init \| attentive \| [\d.]+% \| [\d.]+% \| lr [\d.e-]+, weight decay/);
  assert.match(md, /scored on the test split/);
  assert.match(
    md,
    /Learned minus random init \(points of top-1 accuracy\): linear [+-][\d.]+, kNN [+-][\d.]+, attentive [+-][\d.]+/,
  );
  assert.match(r.stdout, /pre-training: 160 images seen, 10 steps/);
  // Deterministic given the seed (but for the timings).
  const again = run(['eval', '--model', out, '--data', join(dir, 'labeled'), '--out', evalDir, '--k', '5']);
  const untimed = (rows: Row[]) => rows.map(({ seconds, ...x }) => x);
  assert.deepEqual(untimed(JSON.parse(readFileSync(join(evalDir, 'eval.json'), 'utf8')).rows), untimed(report.rows));
  assert.equal(again.status, 0);
  assert.match(r.stdout, /20 test images \(the whole split\)/);
  // A capped test set is a seeded subsample, and the report says so.
  const capped = run([
    'eval',
    '--model',
    out,
    '--data',
    join(dir, 'labeled'),
    '--out',
    evalDir,
    '--test-limit',
    '8',
    '--no-attentive',
  ]);
  assert.equal(capped.status, 0, capped.stderr);
  const small = JSON.parse(readFileSync(join(evalDir, 'eval.json'), 'utf8'));
  assert.equal(small.testCount, 8);
  assert.equal(small.testTotal, 20);
  assert.match(capped.stdout, /8 of 20 test images \(seeded subsample\)/);
  assert.equal(small.attentive, null);
  assert.ok(small.rows.every((x: Row) => x.probe !== 'attentive'));
  const probe = run(['probe', '--model', out, '--data', join(dir, 'labeled'), '--test-limit', '8']);
  assert.match(probe.stdout, /8 \(seeded subsample of 20\) test images/);
});

test('ijepa eval --validation scores on the held-out part of the training data, with both readouts', () => {
  const out = join(dir, 'pkg-probe');
  const evalDir = join(dir, 'eval-val');
  mkdirSync(evalDir);
  const r = run([
    'eval',
    '--model',
    out,
    '--data',
    join(dir, 'labeled'),
    '--out',
    evalDir,
    '--validation',
    '--readout',
    'mean',
    'grid2',
    '--no-knn',
  ]);
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(readFileSync(join(evalDir, 'eval.json'), 'utf8'));
  assert.match(report.testSplit, /validation split: 10 training images held out\)/);
  assert.equal(report.split, 'validation');
  assert.equal(report.testCount, 10);
  assert.equal(report.trainCount, 50);
  assert.deepEqual(
    report.rows.map(
      (x: { kind: string; probe: string; readout?: string }) => `${x.kind}/${x.probe}/${x.readout ?? '-'}`,
    ),
    [
      'ijepa/linear/mean',
      'ijepa/attentive/-',
      'ijepa/linear/grid2',
      'random-init/linear/mean',
      'random-init/attentive/-',
      'random-init/linear/grid2',
      'pixels/linear/-',
    ],
  );
  const md = readFileSync(join(evalDir, 'eval.md'), 'utf8');
  assert.match(md, /scored on the validation split: 10 validation images/);
  assert.match(md, /Linear probe, grid readout \(dense, high-dimensional: scores high even at random init\):/);
  assert.match(md, /\| trained encoder \| grid2 \|/);
});

test('ijepa figures writes masks, curves, feature-map and reconstruction PNGs of the expected sizes', async () => {
  const sharp = (await import('sharp')).default;
  const out = join(dir, 'figs');
  const r = run([
    'figures',
    '--run',
    join(dir, 'runA'),
    '--data',
    join(dir, 'labeled'),
    '--out',
    out,
    '--count',
    '4',
    '--map-points',
    '20',
    '--gallery',
    '10',
  ]);
  assert.equal(r.status, 0, r.stderr);
  const sizes: Record<string, [number, number]> = {
    'masks.png': [536, 160],
    'curves.png': [1140, 480],
    'map.png': [640, 640],
    'recon.png': [400, 560],
  };
  for (const [f, [w, h]] of Object.entries(sizes)) {
    const meta = await sharp(join(out, f)).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ['png', w, h], f);
    const stats = await sharp(join(out, f)).stats();
    assert.ok(
      stats.channels.some((c) => c.stdev > 1),
      `${f} is not blank`,
    );
  }
  assert.match(
    run(['figures', '--run', join(dir, 'nothing'), '--data', join(dir, 'labeled')]).stderr,
    /no checkpoint\.bin/,
  );
});

test('ijepa study trains each recipe on the training split, scores on validation, and resumes by skipping done runs', async () => {
  const sharp = (await import('sharp')).default;
  const out = join(dir, 'study');
  const cfg = join(dir, 'study-tiny.json');
  writeFileSync(
    cfg,
    JSON.stringify({
      model: tinyModel,
      batch: 8,
      chunk: 8,
      masks: { numTargets: 2, targetScale: [0.1, 0.15], minKeep: 2 },
      diagEvery: 2,
      logEvery: 1,
    }),
  );
  const args = [
    'study',
    '--data',
    join(dir, 'labeled'),
    '--out',
    out,
    '--recipes',
    'reference,fast-ema',
    '--budgets',
    '0.05',
    '--seeds',
    '0',
    '--threads',
    '1',
    '--config',
    cfg,
  ];
  const r = run(args);
  assert.equal(r.status, 0, r.stderr);
  const results = readFileSync(join(out, 'results.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  assert.deepEqual(
    results.map((x) => x.recipe),
    ['reference', 'fast-ema'],
  );
  for (const x of results) {
    assert.ok(
      x.steps >= 1 && x.val.mean.accuracy >= 0 && x.val.mean.accuracy <= 1 && x.val.grid2.accuracy <= 1,
      JSON.stringify(x),
    );
  }
  assert.equal(JSON.parse(readFileSync(join(out, 'reference-0.05m-s0', 'config.json'), 'utf8')).holdout, true);
  const md = readFileSync(join(out, 'study.md'), 'utf8');
  assert.match(md, /\| 0\.05 min \| reference \| 0 \|/);
  assert.match(md, /random-init, mean/);
  assert.match(md, /L2 chosen per probe from 1, 0\.1, 0\.01, 0\.001, 0\.0001/);
  assert.ok(results.every((x) => x.l2 === 'auto'));
  assert.match(
    run([...args, '--l2', '0.001']).stderr,
    /holds probes fitted with --l2 auto, this study asks for --l2 0\.001/,
    'one probe setting per study directory',
  );
  assert.match(run([...args, '--l2', 'strong']).stderr, /--l2 must be a number ≥ 0 or 'auto', got 'strong'/);
  assert.equal((await sharp(join(out, 'study.png')).metadata()).format, 'png');
  // Lose the last result (as if evaluation had been interrupted): the trained run is evaluated, not retrained.
  writeFileSync(join(out, 'results.jsonl'), `${readFileSync(join(out, 'results.jsonl'), 'utf8').split('\n')[0]}\n`);
  const again = run(args);
  assert.equal(again.status, 0, again.stderr);
  assert.match(again.stderr, /reference-0\.05m-s0 done already/);
  assert.match(again.stderr, /fast-ema-0\.05m-s0: training finished earlier, evaluating it/);
  assert.equal(readFileSync(join(out, 'results.jsonl'), 'utf8').trim().split('\n').length, 2);
  // More probes later (a shallower layer, a finer readout): added to the finished runs, nothing retrained.
  const more = run([...args, '--readouts', 'mean,grid4', '--layers', `${tinyModel.depth},1`]);
  assert.equal(more.status, 0, more.stderr);
  assert.doesNotMatch(more.stderr, /: training/);
  assert.match(more.stderr, /reference-0\.05m-s0: adding probes grid4, L1\/mean, L1\/grid4/);
  // Append-only: each run's new record follows its old one, and the later one is read.
  const records = readFileSync(join(out, 'results.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  assert.equal(records.length, 4);
  const probed = records.slice(2);
  assert.deepEqual(
    probed.map((x) => x.recipe),
    ['reference', 'fast-ema'],
  );
  for (const x of probed)
    assert.deepEqual(Object.keys(x.val).sort(), ['L1/grid4', 'L1/mean', 'grid2', 'grid4', 'mean']);
  const l1 = JSON.parse(readFileSync(join(out, 'reference-0.05m-s0', 'model-L1', 'manifest.json'), 'utf8'));
  assert.equal(l1.architecture.depth, 1);
  assert.equal(l1.files.predictor, undefined);
  const baselines = JSON.parse(
    readFileSync(join(out, readdirSync(out).find((f) => f.startsWith('baselines-'))!), 'utf8'),
  );
  assert.deepEqual(Object.keys(baselines.randomInit).sort(), ['L1/grid4', 'L1/mean', 'grid2', 'grid4', 'mean']);
  const report = readFileSync(join(out, 'study.md'), 'utf8');
  assert.match(report, /val acc, block 1, grid4/);
  assert.equal(report.match(/\| reference \| 0 \|/g)?.length, 1, 'a run with two records is one row');
  // A recipe that changes only the predictor reads the same random-init encoder: baselines are shared.
  const cfgPred = join(dir, 'study-tiny-pred2.json');
  writeFileSync(
    cfgPred,
    JSON.stringify({ ...JSON.parse(readFileSync(cfg, 'utf8')), model: { ...tinyModel, predDepth: 2 } }),
  );
  const pred = run([
    ...args.slice(0, 5),
    '--recipes',
    'reference',
    '--budgets',
    '0.04',
    '--seeds',
    '0',
    '--threads',
    '1',
    '--config',
    cfgPred,
  ]);
  assert.equal(pred.status, 0, pred.stderr);
  assert.equal(readdirSync(out).filter((f) => f.startsWith('baselines-')).length, 1);
  assert.match(
    readFileSync(join(out, 'study.md'), 'utf8'),
    /\| 0\.04 min \| reference \| 0 \|.*\| -?\d+\.\d+ \([a-z0-9]+\) \|/,
    'its Δ vs random-init comes from the shared baselines',
  );
  assert.match(run([...args, '--layers', '9']).stderr, /--layers 9: the encoder has blocks 1\.\.2/);
  assert.match(run([...args.slice(0, 5), '--recipes', 'nonsense']).stderr, /unknown recipe 'nonsense'/);
});

test('ijepa train --recipe mae lowers its reconstruction loss and exports an encoder-only package', async () => {
  const { readPackage } = await import('../../format/package.ts');
  const maeConfig = join(dir, 'tiny-mae.json');
  const { sigreg: _, masks: __, ...base } = JSON.parse(readFileSync(config, 'utf8'));
  writeFileSync(maeConfig, JSON.stringify({ ...base, maxSteps: 12, epochs: 12, optim: { warmupEpochs: 1 } }));
  const out = join(dir, 'mae');
  const r = run(['train', '--data', data, '--out', out, '--config', maeConfig, '--recipe', 'mae', '--plain']);
  assert.equal(r.status, 0, r.stderr);
  const losses = metrics(out).map((x) => x.loss as number);
  assert.equal(losses.length, 12);
  // Predicting zeros scores 1 on standardised pixels: a decoder that learns beats that.
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  assert.ok(mean(losses.slice(-3)) < mean(losses.slice(0, 3)), `loss ${losses.join(', ')}`);
  const pkg = join(dir, 'mae-pkg');
  assert.equal(run(['export', '--run', out, '--out', pkg]).status, 0);
  const p = readPackage(pkg);
  assert.equal(p.manifest.training.objective, 'mae');
  assert.equal(p.manifest.training.recipe, 'mae');
  assert.deepEqual(Object.keys(p.manifest.files), ['encoder']);
  // MAE has no target encoder to flip or to regularise.
  const bad = run(['train', '--data', data, '--out', join(dir, 'mae-bad'), '--config', config, '--recipe', 'mae']);
  assert.match(bad.stderr, /objective 'mae' reconstructs pixels: it takes no SIGReg/);
});
