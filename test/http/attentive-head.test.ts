/** A package whose probe head is attentive: /v1/classify serves it, with the probabilities of the graph eval trains. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import { createApp } from '../../serve/app.ts';
import { Service } from '../../serve/service.ts';
import { images, makePackage } from './fixtures.ts';
import { readPackage, contentHash, describeFile, writePackage } from '../../format/package.ts';
import { attentiveGraph, attentiveHead, attentiveParams, type AttentiveShape } from '../../eval/attentive.ts';
import { probeSchema } from '../../format/probe.ts';
import { randomArray } from '../helpers.ts';

const classes = ['dark', 'light', 'other'];
const shape: AttentiveShape = { tokens: 16, dim: 32, heads: 4, classes: 3 };
const theta = randomArray(attentiveParams(shape).size, 5, 0.4);
let dir = '';
let service: Service;
let server: Server;
let base = '';

before(async () => {
  dir = makePackage(false, { id: 'tiny-attentive' });
  const m = readPackage(dir).manifest;
  const files: Record<string, Uint8Array> = {};
  for (const f of Object.values(m.files)) if (f) files[f.path] = readFileSync(join(dir, f.path));
  const head = probeSchema.parse(attentiveHead({ shape, theta, losses: [] }, classes));
  files['probe.json'] = new TextEncoder().encode(JSON.stringify(head));
  const described = { ...m.files, probe: describeFile('probe.json', files['probe.json']) };
  writePackage(dir, { ...m, files: described, classes, contentHash: contentHash(described) }, files);
  service = await Service.open(dir, { maxBatch: 4, maxWaitMs: 1 });
  server = await new Promise<Server>((resolve) => {
    const s = createApp(service).listen(0, '127.0.0.1', () => resolve(s));
  });
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});

after(async () => {
  server.close();
  await service.close();
});

/** The probe graph's logits (onnxruntime) for one image's tokens, as probabilities. */
async function graphProbabilities(tokens: Float32Array): Promise<number[]> {
  const session = await ort.InferenceSession.create(attentiveGraph(shape, false));
  const feeds: Record<string, ort.Tensor> = { x: new ort.Tensor('float32', tokens, [1, shape.tokens, shape.dim]) };
  for (const q of attentiveParams(shape).params)
    feeds[q.name] = new ort.Tensor('float32', theta.subarray(q.offset, q.offset + q.size), q.shape);
  const logits = Array.from((await session.run(feeds)).logits.data as Float32Array);
  await session.release();
  const max = Math.max(...logits);
  const e = logits.map((v) => Math.exp(v - max));
  return e.map((v) => v / e.reduce((a, b) => a + b));
}

test('POST /v1/classify with an attentive head: the probabilities of the trained graph on the image tokens /v1/embed returns', async () => {
  const img = await images();
  const post = (path: string, body: unknown) =>
    fetch(base + path, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
  for (const png of [img.png, img.grayPng]) {
    const b64 = png.toString('base64');
    const embedded = await (await post('/v1/embeddings', { images: [b64], patches: true })).json();
    const tokens = Float32Array.from((embedded.data[0].patches as number[][][]).flat(2));
    assert.equal(tokens.length, shape.tokens * shape.dim);
    const want = await graphProbabilities(tokens);
    const r = await post('/v1/classify', { images: [b64], top_k: 3 });
    assert.equal(r.status, 200);
    const got = (await r.json()).data[0].predictions as { label: string; probability: number }[];
    for (const p of got)
      assert.ok(Math.abs(p.probability - want[classes.indexOf(p.label)]) < 1e-5, JSON.stringify({ got, want }));
  }
  const info = await (await fetch(`${base}/v1/models`)).json();
  assert.deepEqual(info.data[0].probe.classes, classes);
});

test('an attentive head whose token grid is not the encoder’s is refused when the package is opened', async () => {
  const m = readPackage(dir).manifest;
  const files: Record<string, Uint8Array> = {};
  for (const f of Object.values(m.files)) if (f) files[f.path] = readFileSync(join(dir, f.path));
  const wrong = { ...shape, tokens: 9 };
  files['probe.json'] = new TextEncoder().encode(
    JSON.stringify(attentiveHead({ shape: wrong, theta, losses: [] }, classes)),
  );
  const described = { ...m.files, probe: describeFile('probe.json', files['probe.json']) };
  const other = makePackage(false, { id: 'tiny-attentive-wrong' });
  writePackage(
    other,
    { ...m, id: 'tiny-attentive-wrong', files: described, contentHash: contentHash(described) },
    files,
  );
  await assert.rejects(Service.open(other, {}), /an attentive head over 9 × 32 tokens, the encoder gives 16 × 32/);
});
