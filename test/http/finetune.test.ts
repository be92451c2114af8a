/**
 * `ijepa finetune` end to end: a tiny package fine-tuned on the CIFAR-10 fixture images (class
 * folders made from their names), served: /v1/classify gives the fine-tuning forward graph's
 * softmax; --random-init starts from other weights than the package's.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import { copyFileSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createApp } from '../../serve/app.ts';
import { Service } from '../../serve/service.ts';
import { makePackage } from './fixtures.ts';
import { tempDir } from '../tmp.ts';
import { tinyModel } from '../helpers.ts';
import { readPackage } from '../../format/package.ts';
import { normalizeChw, toRgb } from '../../format/preprocess.ts';
import { ParamStore } from '../../model/params.ts';
import { readCheckpoint } from '../../train/checkpoint.ts';
import { createSession } from '../../runtime/session.ts';
import { finetuneGraph, finetuneSpecs } from '../../finetune/graph.ts';
import {
  FINETUNE_CHECKPOINT,
  encoderWeights,
  finetuneLogits,
  runFinetune,
  type FinetuneResult,
} from '../../finetune/finetune.ts';

const FIXTURES = join(import.meta.dirname, '..', 'fixtures', 'cifar10');
const m = tinyModel;
let source = '';
let out = '';
let randomOut = '';
let result: FinetuneResult;
let service: Service;
let server: Server;
let base = '';
let classes: string[] = [];

before(async () => {
  source = makePackage(false, { id: 'tiny-ft-source' });
  // The fixtures are named <label>-<class>-<n>.jpg: one folder per class.
  const data = tempDir('ijepa-ft-cifar-');
  for (const f of readdirSync(FIXTURES).filter((f) => f.endsWith('.jpg'))) {
    const cls = f.split('-').slice(0, 2).join('-');
    mkdirSync(join(data, cls), { recursive: true });
    copyFileSync(join(FIXTURES, f), join(data, cls, f));
  }
  const root = tempDir('ijepa-ft-pkgs-');
  out = join(root, 'tiny-finetuned');
  randomOut = join(root, 'tiny-random-finetuned');
  const common = { model: source, data, validation: true, epochs: 2, batch: 8, threads: 1, log: () => {} };
  result = await runFinetune({ ...common, out });
  await runFinetune({ ...common, out: randomOut, randomInit: true });
  classes = readPackage(out).manifest.classes!;
  service = await Service.open(out, { maxBatch: 4, maxWaitMs: 1 });
  server = await new Promise<Server>((resolve) => {
    const s = createApp(service).listen(0, '127.0.0.1', () => resolve(s));
  });
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});

after(async () => {
  server?.close();
  await service?.close();
});

test('the fine-tuned package: /v1/classify gives the fine-tuning forward graph’s softmax', async () => {
  const pkg = readPackage(out).manifest;
  assert.equal(pkg.finetune?.from?.contentHash, readPackage(source).manifest.contentHash);
  assert.equal(pkg.finetune?.steps, result.steps);
  assert.equal(result.steps, 2 * Math.floor(result.trainCount / 8));
  assert.equal(classes.length, 10);
  const ck = readCheckpoint(join(out, FINETUNE_CHECKPOINT));
  const params = new ParamStore(finetuneSpecs(m, classes.length), ck.arrays.get('params'));
  // The head reads the pooled embedding standardised by statistics of the starting encoder.
  const scale = { mean: ck.arrays.get('featMean')!, std: ck.arrays.get('featStd')! };
  assert.ok(scale.std.some((s) => Math.abs(s - 1) > 0.01) && scale.mean.some((v) => Math.abs(v) > 1e-3));
  const session = await createSession(finetuneGraph(m, classes.length, false), { threads: 1 });
  try {
    for (const f of ['0-airplane-0007.jpg', '6-frog-0017.jpg']) {
      const bytes = readFileSync(join(FIXTURES, f));
      const chw = new Float32Array(3 * m.imageSize * m.imageSize);
      normalizeChw(await toRgb({ kind: 'encoded', data: bytes }, pkg.preprocess), pkg.preprocess, chw);
      const logits = Array.from(await finetuneLogits(session, params, scale, chw, 1, m));
      const max = Math.max(...logits);
      const e = logits.map((v) => Math.exp(v - max));
      const want = e.map((v) => v / e.reduce((a, b) => a + b));
      const r: Response = await fetch(`${base}/v1/classify`, {
        method: 'POST',
        body: JSON.stringify({ images: [bytes.toString('base64')], top_k: classes.length }),
        headers: { 'content-type': 'application/json' },
      });
      assert.equal(r.status, 200);
      const got = (await r.json()).data[0].predictions as { label: string; probability: number }[];
      assert.equal(got.length, classes.length);
      for (const p of got)
        assert.ok(Math.abs(p.probability - want[classes.indexOf(p.label)]) < 1e-4, JSON.stringify({ f, got, want }));
    }
  } finally {
    await session.release();
  }
});

test('--random-init starts from other weights than the package’s; without it the encoder stays near them', () => {
  const src = encoderWeights(readPackage(source).file('encoder'), m);
  const diff = (dir: string) => {
    const w = encoderWeights(readPackage(dir).file('encoder'), m);
    let d = 0;
    for (let i = 0; i < w.data.length; i++) d = Math.max(d, Math.abs(w.data[i] - src.data[i]));
    return d;
  };
  const tuned = diff(out);
  const random = diff(randomOut);
  assert.ok(tuned > 0, 'fine-tuning moved the encoder');
  assert.ok(random > 10 * tuned, `random init ${random} vs fine-tuned ${tuned}`);
  assert.equal(readPackage(randomOut).manifest.finetune?.from, undefined);
});
