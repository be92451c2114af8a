/** The routes behind the explorer page: reconstruct, gallery listing, stored pictures, the map; and the packages' context encoders. */
import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import { join } from 'node:path';
import { test } from 'node:test';
import sharp from 'sharp';
import { readPackage } from '../../format/package.ts';
import { normalizeChw, normalizePatches } from '../../format/preprocess.ts';
import { OnnxModel } from '../../runtime/model.ts';
import { createApp } from '../../serve/app.ts';
import { Service } from '../../serve/service.ts';
import { tempDir } from '../tmp.ts';
import { makePackage } from './fixtures.ts';

const BUNDLED = join(import.meta.dirname, '../../models/fmnist-vit-tiny');

async function listen(svc: Service): Promise<{ base: string; server: Server }> {
  const server = await new Promise<Server>((resolve) => {
    const s = createApp(svc).listen(0, '127.0.0.1', () => resolve(s));
  });
  return { server, base: `http://127.0.0.1:${(server.address() as { port: number }).port}` };
}

const png = (seed: number, w = 32) => {
  const raw = Buffer.alloc(w * w * 3);
  for (let i = 0; i < raw.length; i++) raw[i] = (Math.sin(i * (seed + 1) * 0.21) * 110 + 128) & 255;
  return sharp(raw, { raw: { width: w, height: w, channels: 3 } })
    .png()
    .toBuffer();
};

const post = (base: string, path: string, body: Uint8Array | string, type = 'image/png') =>
  fetch(`${base}${path}`, {
    method: 'POST',
    headers: { 'content-type': type },
    body: typeof body === 'string' ? body : new Uint8Array(body),
  });

test("the bundled package's context encoder, given every patch, is its encoder (weights shared by external data)", async () => {
  const pkg = readPackage(BUNDLED);
  const m = pkg.manifest;
  assert.ok(
    m.files.context && m.files.context.bytes < m.files.encoder.bytes / 10,
    'the context encoder holds no copy of the weights',
  );
  const enc = await OnnxModel.load(pkg.file('encoder'));
  const ctx = await OnnxModel.load(pkg.file('context'), {
    externalData: [{ path: 'encoder.onnx', data: pkg.file('encoder') }],
  });
  const rgb = Uint8Array.from({ length: 32 * 32 * 3 }, (_, i) => (i * 37) & 255);
  const chw = new Float32Array(3 * 32 * 32);
  normalizeChw(rgb, m.preprocess, chw);
  const patches = new Float32Array(64 * 48);
  normalizePatches(rgb, m.preprocess, 4, patches);
  const all = BigInt64Array.from({ length: 64 }, (_, i) => BigInt(i));
  const a = (await enc.run({ images: { data: chw, dims: [1, 3, 32, 32] } })).tokens.data;
  const b = (
    await ctx.run({
      patches: { data: patches, dims: [1, 64, 48] },
      ctx_idx: { data: all, dims: [1, 64] },
      ctx_mask: { data: new Float32Array(64).fill(1), dims: [1, 64] },
    })
  ).context.data;
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  assert.ok(d <= 1e-4, `max difference ${d}`);
  await Promise.all([enc.release(), ctx.release()]);
});

test('reconstruct: hidden patches get gallery neighbours; bad boxes and counts are 400; no predictor or gallery is 409', async () => {
  const svc = await Service.open(BUNDLED, { gallery: tempDir('ijepa-recon-') });
  const { base, server } = await listen(svc);
  for (let i = 0; i < 4; i++) assert.equal((await post(base, `/v1/gallery?id=g${i}`, await png(i))).status, 200);
  const q = await png(1);
  const r = await post(base, '/v1/reconstruct?box=2,2,4,5&neighbours=3', q);
  assert.equal(r.status, 200);
  const body = await r.json();
  assert.deepEqual(body.box, [2, 2, 4, 5]);
  assert.equal(body.patches.length, 6);
  assert.deepEqual(body.patches[0].position, [2, 2]);
  for (const p of body.patches) {
    assert.equal(p.neighbours.length, 3);
    assert.ok(p.neighbours[0].similarity >= p.neighbours[2].similarity);
    assert.ok(/^g[0-3]$/.test(p.neighbours[0].id) && p.neighbours[0].patch.every((v: number) => v >= 0 && v < 8));
  }
  const bad = async (path: string, want: number, match: RegExp, body: Uint8Array | string = q, type = 'image/png') => {
    const res = await post(base, path, body, type);
    assert.equal(res.status, want, path);
    const j = await res.json();
    assert.match(j.error, match, path);
    assert.ok(typeof j.code === 'string');
  };
  await bad('/v1/reconstruct', 400, /give the patches to hide as box=/);
  await bad('/v1/reconstruct?box=0,0,9,1', 400, /box must satisfy/);
  await bad('/v1/reconstruct?box=3,3,3,4', 400, /box must satisfy/);
  await bad('/v1/reconstruct?box=0,0,8,8', 400, /hides every patch/);
  await bad('/v1/reconstruct?box=1,1,2,2&neighbours=0', 400, /neighbours/);
  await bad('/v1/reconstruct?box=1,1,2,2&neighbours=17', 400, /neighbours/);
  await bad('/v1/reconstruct?box=1,1,2,2', 400, /not a decodable image/, Buffer.from('nope'));
  const two = JSON.stringify({ images: [q.toString('base64'), q.toString('base64')], box: [1, 1, 2, 2] });
  await bad('/v1/reconstruct', 400, /the limit is 1/, two, 'application/json');
  server.close();
  await svc.close();

  const noPredictor = await Service.open(makePackage(false), { gallery: tempDir('ijepa-recon-np-') });
  const np = await listen(noPredictor);
  const res = await post(np.base, '/v1/reconstruct?box=1,1,2,2', await png(2, 16));
  assert.equal(res.status, 409);
  assert.equal((await res.json()).code, 'no_predictor');
  np.server.close();
  await noPredictor.close();

  const noGallery = await Service.open(BUNDLED);
  const ng = await listen(noGallery);
  assert.equal((await post(ng.base, '/v1/reconstruct?box=1,1,2,2', q)).status, 409);
  ng.server.close();
  await noGallery.close();
});

test('the gallery lists in pages, serves the pictures it stored, and maps itself with labels', async () => {
  const svc = await Service.open(BUNDLED, { gallery: tempDir('ijepa-list-') });
  const { base, server } = await listen(svc);
  for (let i = 0; i < 7; i++) {
    const meta = encodeURIComponent(JSON.stringify({ label: i % 2 ? 'odd' : 'even' }));
    assert.equal((await post(base, `/v1/gallery?id=dir/${i}&metadata=${meta}`, await png(i, 40 + i))).status, 200);
  }
  const page = await (await fetch(`${base}/v1/gallery?offset=5&limit=5`)).json();
  assert.equal(page.total, 7);
  assert.deepEqual(
    page.items.map((x: { id: string }) => x.id),
    ['dir/5', 'dir/6'],
  );
  assert.equal(page.items[0].image, true);
  assert.equal((await fetch(`${base}/v1/gallery?limit=0`)).status, 400);
  assert.equal((await fetch(`${base}/v1/gallery?offset=-1`)).status, 400);
  const pic = await fetch(`${base}/v1/images/dir/3`);
  assert.equal(pic.headers.get('content-type'), 'image/png');
  const meta = await sharp(Buffer.from(await pic.arrayBuffer())).metadata();
  assert.deepEqual([meta.width, meta.height], [32, 32], 'the picture as the model saw it');
  assert.equal((await fetch(`${base}/v1/images/nope`)).status, 404);
  const map = await (await fetch(`${base}/v1/map`)).json();
  assert.equal(map.points.length, 7);
  assert.deepEqual(new Set(map.points.map((p: { label: string }) => p.label)), new Set(['odd', 'even']));
  assert.ok(map.points.every((p: { x: number; y: number }) => Number.isFinite(p.x) && Number.isFinite(p.y)));
  assert.deepEqual(await (await fetch(`${base}/v1/map`)).json(), map, 'the same gallery gives the same map');
  server.close();
  await svc.close();
});
