/**
 * Edges of the HTTP API that a hostile client finds: gallery ids with dot segments and the page's
 * URLs for them, the API key's form and comparison, repeated and prototype-named parameters,
 * paging bounds, keep-alive after a 404, metrics labels, nosniff, and the size of a patches answer.
 */
import assert from 'node:assert/strict';
import http, { type Server } from 'node:http';
import { after, before, test } from 'node:test';
import sharp from 'sharp';
import { createApp, keyMatches } from '../../serve/app.ts';
import { Gallery } from '../../serve/gallery/gallery.ts';
import { Service } from '../../serve/service.ts';
import { imageUrl, itemUrl } from '../../serve/web/paths.ts';
import { tempDir } from '../tmp.ts';
import { makePackage } from './fixtures.ts';
import { maxRelDiff } from '../helpers.ts';
import { percentiles } from './processes.ts';

const KEY = 'sesame';
/** Ids a gallery may hold from before empty and dot segments were refused. */
const LEGACY = ['../gallery/fm3', 'x/..', 'a//b', '/lead', 'trail/', 'a/./b', 'q/%2e%2e'];
/** What a browser's normalisation of those would reach instead. */
const DECOYS = ['fm3', 'gallery/fm3', 'x', 'a/b', 'lead', 'trail', 'q'];
/** A JSON answer of more numbers than this is refused here: 3 images with patches fit, 4 do not. */
const MAX_JSON_NUMBERS = 2000;

let svc: Service;
let server: Server;
let base = '';
let png: Buffer[];

before(async () => {
  const dir = tempDir('ijepa-edges-');
  const g = Gallery.open(dir, 'tiny', 32);
  const v = (x: number) => Float32Array.from({ length: 16 * 32 }, (_, i) => Math.sin(i * x + 1));
  for (const [i, id] of [...DECOYS, ...LEGACY].entries()) g.add(id, v(i + 1), v(i + 1).subarray(0, 32), 4, 4);
  g.close();
  svc = await Service.open(makePackage(false), { gallery: dir, apiKey: KEY, maxJsonNumbers: MAX_JSON_NUMBERS });
  server = await new Promise<Server>((go) => {
    const s = createApp(svc).listen(0, '127.0.0.1', () => go(s));
  });
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  png = await Promise.all(
    [0, 1, 2, 3].map((k) =>
      sharp({ create: { width: 20, height: 20, channels: 3, background: { r: 40 * k, g: 200 - 30 * k, b: 90 } } })
        .png()
        .toBuffer(),
    ),
  );
});

after(async () => {
  await new Promise((go) => server.close(go));
  await svc.close();
});

const addRaw = (query: string, headers: Record<string, string> = { 'x-api-key': KEY }, body = png[0]) =>
  fetch(`${base}/v1/gallery?${query}`, {
    method: 'POST',
    headers: { 'content-type': 'image/png', ...headers },
    body: new Uint8Array(body),
  });
const total = async () => (await (await fetch(`${base}/v1/gallery?limit=1`)).json()).total as number;

test('ids with empty or dot segments are refused, and the id rule says so (message and OpenAPI)', async () => {
  const before = await total();
  for (const id of ['../gallery/fm3', 'a/../fm1', 'x/..', 'a//b', '/lead', 'trail/', '.', '..', 'a/./b']) {
    const raw = await addRaw(`id=${encodeURIComponent(id)}`);
    const body = await raw.json();
    assert.equal(raw.status, 400, `${id}: ${JSON.stringify(body)}`);
    assert.equal(body.code, 'bad_request');
    assert.match(body.error, /empty, '\.' or '\.\.'/, id);
    const viaJson = await fetch(`${base}/v1/gallery`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': KEY },
      body: JSON.stringify({ items: [{ id, image: png[0].toString('base64') }] }),
    });
    assert.equal(viaJson.status, 400, id);
    assert.match((await viaJson.json()).error, /empty, '\.' or '\.\.'/, id);
  }
  assert.equal(await total(), before, 'nothing was added');
  // Dots inside a segment are not dot segments.
  for (const id of ['a/.b', 'x/.../y', '..c', 'shoes/a.png']) {
    const r = await addRaw(`id=${encodeURIComponent(id)}`);
    assert.equal(r.status, 200, `${id}: ${await r.text()}`);
    const del = await fetch(new URL(itemUrl(id), base), { method: 'DELETE', headers: { 'x-api-key': KEY } });
    assert.deepEqual(await del.json(), { deleted: id });
  }
  const api = await (await fetch(`${base}/openapi.json`)).json();
  for (const schema of [
    api.paths['/v1/gallery/{id}'].get.parameters[0].schema,
    api.paths['/v1/gallery'].post.parameters.find((p: { name: string }) => p.name === 'id').schema,
  ]) {
    const rule = new RegExp(schema.pattern);
    assert.ok(rule.test('shoes/a.png') && rule.test('a/.b'), schema.pattern);
    for (const bad of ['a/../b', 'x/..', 'a//b', '/lead', 'trail/', '.']) assert.ok(!rule.test(bad), bad);
    assert.equal(schema.maxLength, 128);
  }
});

test("the page's URLs reach exactly the item they name, whatever its segments", async () => {
  for (const id of LEGACY) {
    const url = new URL(itemUrl(id), base); // the WHATWG parser, as in the browser: it resolves dot segments
    const got = await fetch(url);
    assert.equal(got.status, 200, `${id} → ${url.pathname}: ${await got.clone().text()}`);
    assert.equal((await got.json()).id, id, url.pathname);
    // No picture is stored with these: the 404 names the id the server understood.
    const pic = await (await fetch(new URL(imageUrl(id), base))).json();
    assert.match(pic.error, new RegExp(`'${id.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}' was added without`));
    const del = await fetch(url, { method: 'DELETE', headers: { 'x-api-key': KEY } });
    assert.equal(del.status, 200, `${id} → ${url.pathname}`);
    assert.deepEqual(await del.json(), { deleted: id });
  }
  for (const id of DECOYS) assert.equal((await fetch(new URL(itemUrl(id), base))).status, 200, `${id} is still there`);
});

test('a repeated metadata parameter is 400, like a repeated id', async () => {
  const twice = await addRaw(
    `id=meta&metadata=${encodeURIComponent('{"a":1}')}&metadata=${encodeURIComponent('{"b":2}')}`,
  );
  assert.equal(twice.status, 400, await twice.clone().text());
  assert.match((await twice.json()).error, /metadata.*more than once/);
  const ids = await addRaw('id=meta&id=other');
  assert.equal(ids.status, 400);
  assert.match((await ids.json()).error, /id.*more than once/);
  assert.equal((await fetch(`${base}/v1/gallery/meta`)).status, 404);
});

test('the API key: only as x-api-key or with the Bearer scheme', async () => {
  const bare = await addRaw('id=auth', { authorization: KEY });
  assert.equal(bare.status, 401, 'a key without the Bearer scheme');
  assert.equal((await bare.json()).code, 'unauthorized');
  assert.equal((await addRaw('id=auth', { authorization: `Basic ${KEY}` })).status, 401);
  assert.equal((await addRaw('id=auth', { authorization: `Bearer ${KEY}x` })).status, 401);
  assert.equal((await addRaw('id=auth', { authorization: `Bearer ${KEY}` })).status, 200);
  assert.equal((await addRaw('id=auth', { 'x-api-key': KEY })).status, 200);
  const del = await fetch(`${base}/v1/gallery/auth`, { method: 'DELETE', headers: { authorization: KEY } });
  assert.equal(del.status, 401);
});

test('a wrong key takes as long to refuse wherever it differs from the key', (t) => {
  const key = 'k'.repeat(1 << 18);
  const early = `x${key.slice(1)}`;
  const late = `${key.slice(0, -1)}x`;
  assert.ok(keyMatches(key, key));
  for (const wrong of [early, late, key.slice(1), '', undefined, [key, key]]) assert.ok(!keyMatches(wrong, key));
  // Interleaved, so a burst of load on this shared machine slows both alike.
  const time = (given: string) => {
    const t0 = process.hrtime.bigint();
    keyMatches(given, key);
    return Number(process.hrtime.bigint() - t0);
  };
  const ns = { early: [] as number[], late: [] as number[] };
  for (let i = 0; i < 81; i++) {
    ns.early.push(time(early));
    ns.late.push(time(late));
  }
  const [e, l] = [percentiles(ns.early.slice(20)).p50, percentiles(ns.late.slice(20)).p50];
  t.diagnostic(`median ns per comparison of a 256 KiB key: differing at the first character ${e}, at the last ${l}`);
  assert.ok(l < 2 * e, `differing at the end took ${(l / e).toFixed(1)}× as long as differing at the start`);
});

test('a multipart field named __proto__[…] does not reach the options', async () => {
  const f = new FormData();
  f.append('__proto__[patches]', 'true');
  f.append('__proto__[dtype]', 'float64');
  f.append('a', new Blob([new Uint8Array(png[0])], { type: 'image/png' }), 'a.png');
  const r = await fetch(`${base}/v1/embeddings`, { method: 'POST', body: f });
  const body = await r.json();
  assert.equal(r.status, 200, JSON.stringify(body).slice(0, 200));
  assert.equal(body.data[0].patches, undefined);
});

test('paging offsets are bounded: a 400 naming the bound, never an inexact echo', async () => {
  for (const offset of ['100000000000000000000000000', '9'.repeat(400), '9007199254740992']) {
    const r = await fetch(`${base}/v1/gallery?offset=${offset}`);
    const body = await r.json();
    assert.equal(r.status, 400, `offset ${offset.slice(0, 30)}: ${JSON.stringify(body).slice(0, 200)}`);
    assert.match(body.error, /offset.*9007199254740991/);
  }
  const edge = await (await fetch(`${base}/v1/gallery?offset=9007199254740991`)).json();
  assert.equal(edge.offset, Number.MAX_SAFE_INTEGER);
  assert.deepEqual(edge.items, []);
});

/** One request on `agent`, read whole. */
function request(
  agent: http.Agent,
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: Buffer,
): Promise<{ status: number; connection?: string; reused: boolean }> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${base}${path}`, { method, agent, headers }, (res) => {
      res.resume();
      res.on('end', () =>
        resolve({ status: res.statusCode!, connection: res.headers.connection, reused: req.reusedSocket }),
      );
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('a 404 keeps the keep-alive connection when the request had no body or its body was read', async () => {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    const steps: [string, string, Record<string, string>?, Buffer?][] = [
      ['GET', '/healthz'],
      ['GET', '/v1/nothing'],
      ['GET', '/v1/gallery/no-such-id'],
      ['DELETE', '/v1/gallery/no-such-id', { 'x-api-key': KEY }],
      ['GET', '/v1/images/no-such-id'],
      ['POST', '/v1/search', { 'content-type': 'image/png' }, Buffer.from('not an image')],
      ['GET', '/healthz'],
    ];
    for (const [i, [method, path, headers, body]] of steps.entries()) {
      const r = await request(agent, method, path, headers, body);
      assert.notEqual(r.connection, 'close', `${method} ${path}: ${r.status} closed the connection`);
      if (i > 0) assert.ok(r.reused, `${method} ${path} did not reuse the connection`);
    }
    // A refusal before a body is read still closes: Node would otherwise read and discard it.
    const unread = await request(agent, 'POST', '/v1/nothing', { 'content-type': 'image/png' }, Buffer.alloc(200_000));
    assert.equal(unread.status, 404);
    assert.equal(unread.connection, 'close');
  } finally {
    agent.destroy();
  }
});

test('metrics: requests are counted by method and route; unmatched ones stay one series', async () => {
  await fetch(`${base}/v1/gallery`);
  await addRaw('id=counted');
  for (const method of ['GET', 'POST', 'PUT', 'PATCH', 'DELETE']) await fetch(`${base}/nope`, { method });
  const lines = (await (await fetch(`${base}/metrics`)).text())
    .split('\n')
    .filter((l) => l.startsWith('ijepa_http_requests_total{'));
  assert.ok(
    lines.some((l) => /\{method="GET",route="\/v1\/gallery",status="200"\}/.test(l)),
    lines.join('\n'),
  );
  assert.ok(
    lines.some((l) => /\{method="POST",route="\/v1\/gallery",status="200"\}/.test(l)),
    lines.join('\n'),
  );
  const unmatched = lines.filter((l) => l.includes('route="unmatched"'));
  assert.deepEqual(
    unmatched.map((l) => l.replace(/ \d+$/, '')),
    ['ijepa_http_requests_total{route="unmatched",status="404"}'],
  );
});

test('every response says X-Content-Type-Options: nosniff', async () => {
  assert.equal((await addRaw('id=pic')).status, 200);
  const responses: [string, Response][] = [
    ['healthz', await fetch(`${base}/healthz`)],
    ['gallery list', await fetch(`${base}/v1/gallery`)],
    ['image', await fetch(`${base}/v1/images/pic`)],
    ['metrics', await fetch(`${base}/metrics`)],
    ['404', await fetch(`${base}/nope`)],
    ['401', await fetch(`${base}/v1/gallery/pic`, { method: 'DELETE' })],
    [
      'binary embeddings',
      await fetch(`${base}/v1/embeddings`, {
        method: 'POST',
        headers: { 'content-type': 'image/png', accept: 'application/octet-stream' },
        body: new Uint8Array(png[0]),
      }),
    ],
    ['page', await fetch(`${base}/`)],
  ];
  for (const [name, r] of responses) {
    await r.arrayBuffer();
    assert.equal(r.headers.get('x-content-type-options'), 'nosniff', name);
  }
});

/** An IEEE float16's value from its bits. */
function fromHalf(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >> 10) & 0x1f;
  const frac = bits & 0x3ff;
  if (exp === 0) return sign * 2 ** -14 * (frac / 1024);
  if (exp === 31) return frac ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * 2 ** (exp - 15) * (1 + frac / 1024);
}

test('patches: a compact base64 encoding, and the JSON float form bounded', async (t) => {
  const embed = (n: number, options: Record<string, unknown>, headers: Record<string, string> = {}) =>
    fetch(`${base}/v1/embeddings`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: JSON.stringify({ images: png.slice(0, n).map((b) => b.toString('base64')), ...options }),
    });
  const refused = await embed(4, { patches: true });
  const why = await refused.json();
  assert.equal(refused.status, 422, JSON.stringify(why).slice(0, 200));
  assert.equal(why.code, 'response_too_large');
  assert.match(why.error, new RegExp(`${MAX_JSON_NUMBERS}`));
  assert.match(why.error, /encoding=base64/);

  const asJson = await embed(3, { patches: true });
  assert.equal(asJson.status, 200);
  const jsonText = await asJson.text();
  const floats = JSON.parse(jsonText).data;
  const compact = await embed(3, { patches: true, encoding: 'base64' });
  assert.equal(compact.status, 200);
  const compactText = await compact.text();
  const b64 = JSON.parse(compactText);
  assert.equal(b64.encoding, 'base64');
  assert.equal(b64.dtype, 'float32');
  assert.deepEqual(b64.geometry.grid, [4, 4]);
  const f32 = (s: string) => {
    const b = Buffer.from(s, 'base64');
    return new Float32Array(b.buffer, b.byteOffset, b.length / 4);
  };
  // The two requests' images may be batched differently (decodes finish in any order), which
  // moves the last bits of the encoder's output: the same numbers to float32 rounding.
  for (const [i, item] of b64.data.entries()) {
    assert.ok(maxRelDiff(f32(item.embedding), floats[i].embedding) < 1e-5);
    assert.ok(maxRelDiff(f32(item.patches), floats[i].patches.flat(2)) < 1e-5);
  }
  const half = await (await embed(1, { patches: true, encoding: 'base64', dtype: 'float16' })).json();
  const h = Buffer.from(half.data[0].patches, 'base64');
  const halves = new Uint16Array(h.buffer, h.byteOffset, h.length / 2);
  // Each value the float16 nearest to the float32 one (half a step: 2^-11 relative), give or take.
  const off = floats[0].patches
    .flat(2)
    .map((x: number, j: number) => Math.abs(fromHalf(halves[j]) - x) / Math.max(Math.abs(x), 2 ** -14));
  assert.ok(Math.max(...off) < 2 ** -10, `float16 values off by up to ${Math.max(...off)} relative`);
  // The compact form and the binary answer are not bounded: 4 images are answered.
  assert.equal((await embed(4, { patches: true, encoding: 'base64' })).status, 200);
  assert.equal((await embed(4, { patches: true }, { accept: 'application/octet-stream' })).status, 200);
  t.diagnostic(
    `3 images with patches (4×4×32): JSON floats ${jsonText.length} bytes, base64 float32 ${compactText.length} bytes`,
  );
  assert.ok(compactText.length * 3 < jsonText.length);
  const bad = await embed(1, { encoding: 'hex' });
  assert.equal(bad.status, 400);
});
