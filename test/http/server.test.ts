/** The HTTP API on a real listening server: happy paths, 30+ bad inputs, batching and overload. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import { createApp } from '../../serve/app.ts';
import { Service } from '../../serve/service.ts';
import { images, makePackage } from './fixtures.ts';
import { toHalf } from '../../serve/routes/embed.ts';
import { decodeCost } from '../../runtime/decode.ts';
import { serve } from '../../serve/main.ts';
import { gzipSync } from 'node:zlib';

let server: Server;
let base = '';
let service: Service;
let noProbe: { server: Server; base: string; service: Service };
let img: Awaited<ReturnType<typeof images>>;
const limits = {
  maxBytes: 200_000,
  maxPixels: 4_000_000,
  maxImages: 8,
  maxRequestBytes: 1_000_000,
  maxBatch: 8,
  maxWaitMs: 5,
  maxQueue: 64,
};

async function listen(svc: Service): Promise<{ server: Server; base: string }> {
  const app = createApp(svc);
  const s = await new Promise<Server>((resolve) => {
    const srv = app.listen(0, '127.0.0.1', () => resolve(srv));
  });
  const addr = s.address() as { port: number };
  return { server: s, base: `http://127.0.0.1:${addr.port}` };
}

before(async () => {
  img = await images();
  service = await Service.open(makePackage(true), limits);
  ({ server, base } = await listen(service));
  const svc2 = await Service.open(makePackage(false), limits);
  noProbe = { ...(await listen(svc2)), service: svc2 };
});

after(async () => {
  server.close();
  noProbe.server.close();
  await service.close();
  await noProbe.service.close();
});

const post = (path: string, body: BodyInit | Buffer | undefined, headers: Record<string, string> = {}, at = base) =>
  fetch(at + path, { method: 'POST', body: Buffer.isBuffer(body) ? new Uint8Array(body) : body, headers });
const b64 = (b: Buffer) => b.toString('base64');
const json = (v: unknown) => JSON.stringify(v);

function form(files: [string, Buffer, string][], fields: Record<string, string> = {}): FormData {
  const f = new FormData();
  for (const [name, bytes, type] of files) f.append(name, new Blob([new Uint8Array(bytes)], { type }), `${name}.bin`);
  for (const [k, v] of Object.entries(fields)) f.append(k, v);
  return f;
}

/** Sends a form without content-length (chunked), as a streaming client would. */
async function chunked(f: FormData): Promise<Response> {
  const r = new Request('http://x/', { method: 'POST', body: f });
  const bytes = new Uint8Array(await r.arrayBuffer());
  const body = new ReadableStream({
    start(c) {
      for (let i = 0; i < bytes.length; i += 65536) c.enqueue(bytes.subarray(i, i + 65536));
      c.close();
    },
  });
  return fetch(`${base}/v1/embeddings`, {
    method: 'POST',
    body,
    headers: { 'content-type': r.headers.get('content-type')! },
    duplex: 'half',
  } as RequestInit);
}

test('health, readiness, models, OpenAPI, metrics', async () => {
  assert.deepEqual(await (await fetch(`${base}/healthz`)).json(), { status: 'ok' });
  const ready = await fetch(`${base}/readyz`);
  assert.equal(ready.status, 200);
  assert.equal((await ready.json()).ready, true);
  const models = await (await fetch(`${base}/v1/models`)).json();
  assert.equal(models.data[0].id, 'tiny-probe');
  assert.deepEqual(models.data[0].probe.classes, ['dark', 'light', 'other']);
  const api = await (await fetch(`${base}/openapi.json`)).json();
  // Every route the app registers is described, with its methods.
  const stack = (
    createApp(service) as unknown as {
      router: { stack: { route?: { path: string; methods: Record<string, boolean> } }[] };
    }
  ).router.stack;
  const routes = stack
    .filter((l) => l.route)
    .map((l) => ({ path: l.route!.path.replace(/\*(\w+)/, '{$1}'), methods: Object.keys(l.route!.methods) }));
  assert.ok(routes.length >= 10);
  for (const r of routes)
    for (const m of r.methods)
      assert.ok(api.paths[r.path]?.[m], `${m.toUpperCase()} ${r.path} missing from /openapi.json`);
  // Limits come from the schemas the routes validate with: the integer branch of top_k and k.
  const topK = api.paths['/v1/classify'].post.parameters.find((p: { name: string }) => p.name === 'top_k');
  assert.deepEqual(topK.schema.anyOf[0], { type: 'integer', minimum: 1, maximum: 1000 });
  const searchBody = api.paths['/v1/search'].post.requestBody.content['application/json'].schema;
  assert.equal(searchBody.properties.k.anyOf[0].maximum, 100);
  assert.equal(searchBody.properties.top_k, undefined);
  assert.equal(searchBody.additionalProperties, false);
  await post('/v1/embeddings', img.png, { 'content-type': 'image/png' });
  const metrics = await (await fetch(`${base}/metrics`)).text();
  assert.match(metrics, /ijepa_http_requests_total\{method="POST",route="\/v1\/embeddings",status="200"\} \d+/);
  assert.match(metrics, /ijepa_stage_seconds_bucket\{le="[\d.]+",stage="decode"\}/);
  assert.match(metrics, /ijepa_stage_seconds_bucket\{le="[\d.]+",stage="inference"\}/);
  assert.match(metrics, /ijepa_batch_size_count \d+/);
  assert.match(metrics, /ijepa_queue_images \d+/);
});

test('POST /v1/embeddings: raw image, JSON base64, multipart; patches with geometry', async () => {
  const raw = await (await post('/v1/embeddings', img.jpeg, { 'content-type': 'image/jpeg' })).json();
  assert.equal(raw.data.length, 1);
  assert.equal(raw.data[0].embedding.length, 32);
  assert.deepEqual(raw.geometry, { inputSize: 16, resize: 'squash', patchSize: 4, grid: [4, 4], dim: 32 });

  const viaJson = await (
    await post(
      '/v1/embeddings',
      json({ images: [b64(img.jpeg), `data:image/png;base64,${b64(img.png)}`], patches: true }),
      { 'content-type': 'application/json' },
    )
  ).json();
  assert.equal(viaJson.data.length, 2);
  assert.equal(viaJson.data[1].patches.length, 4);
  assert.equal(viaJson.data[1].patches[3].length, 4);
  assert.equal(viaJson.data[1].patches[3][3].length, 32);
  // The same image gives the same embedding however it arrives (and alone or inside a batch).
  const close = (a: number[], b: number[]) => a.every((v, i) => Math.abs(v - b[i]) < 1e-5);
  assert.ok(close(viaJson.data[0].embedding, raw.data[0].embedding));

  const mp = await (
    await post(
      '/v1/embeddings',
      form([
        ['a', img.webp, 'image/webp'],
        ['b', img.jpeg, 'image/jpeg'],
      ]),
    )
  ).json();
  assert.equal(mp.data.length, 2);
  assert.ok(close(mp.data[1].embedding, raw.data[0].embedding));
});

test('binary responses: float32 and float16 with shape headers', async () => {
  const r = await post('/v1/embeddings?patches=true', img.png, {
    'content-type': 'image/png',
    accept: 'application/octet-stream',
  });
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('x-shape'), '1,4,4,32');
  assert.equal(r.headers.get('x-dtype'), 'float32');
  const f32 = new Float32Array(await r.arrayBuffer());
  assert.equal(f32.length, 4 * 4 * 32);
  const h = await post('/v1/embeddings?dtype=float16', img.png, {
    'content-type': 'image/png',
    accept: 'application/octet-stream',
  });
  assert.equal(h.headers.get('x-shape'), '1,32');
  const f16 = new Uint16Array(await h.arrayBuffer());
  const pooled = (await (await post('/v1/embeddings', img.png, { 'content-type': 'image/png' })).json()).data[0]
    .embedding as number[];
  pooled.forEach((v, i) => assert.equal(f16[i], toHalf(v)));
  assert.equal(toHalf(1), 0x3c00);
  assert.equal(toHalf(-2), 0xc000);
  assert.equal(toHalf(65504), 0x7bff);
  assert.equal(toHalf(1e6), 0x7c00);
});

test('POST /v1/classify: top-k probabilities; 409 without a probe', async () => {
  const r = await (await post('/v1/classify?top_k=2', img.png, { 'content-type': 'image/png' })).json();
  assert.equal(r.data[0].predictions.length, 2);
  const p = r.data[0].predictions;
  assert.ok(p[0].probability >= p[1].probability && p[0].probability <= 1);
  assert.ok(['dark', 'light', 'other'].includes(p[0].label));
  const all = await (
    await post('/v1/classify', json({ images: [b64(img.png)], top_k: 3 }), { 'content-type': 'application/json' })
  ).json();
  assert.ok(
    Math.abs(all.data[0].predictions.reduce((s: number, q: { probability: number }) => s + q.probability, 0) - 1) <
      1e-9,
  );
  const none = await post('/v1/classify', img.png, { 'content-type': 'image/png' }, noProbe.base);
  assert.equal(none.status, 409);
  assert.equal((await none.json()).code, 'no_probe');
});

test('hard but valid images are handled: grayscale, alpha, CMYK, 16-bit, EXIF-rotated, GIF, TIFF', async () => {
  for (const [name, bytes, type] of [
    ['gray', img.grayPng, 'image/png'],
    ['rgba', img.rgbaPng, 'image/png'],
    ['cmyk', img.cmykJpeg, 'image/jpeg'],
    ['16-bit', img.png16, 'image/png'],
    ['exif', img.exifJpeg, 'image/jpeg'],
    ['gif', img.gif, 'image/gif'],
    ['tiff', img.tiff, 'image/tiff'],
  ] as const) {
    const r = await post('/v1/embeddings', bytes, { 'content-type': type });
    assert.equal(r.status, 200, `${name}: ${await r.clone().text()}`);
    assert.ok((await r.json()).data[0].embedding.every(Number.isFinite), name);
  }
});

test('one bad image inside a batch is reported for that image only', async () => {
  const r = await post(
    '/v1/embeddings',
    json({ images: [b64(img.png), b64(img.text), 'not base64!!', b64(img.bomb)] }),
    { 'content-type': 'application/json' },
  );
  assert.equal(r.status, 200);
  const body = await r.json();
  assert.ok(body.data[0].embedding);
  assert.deepEqual(
    body.data.slice(1).map((d: { code: string }) => d.code),
    ['invalid_image', 'invalid_base64', 'image_too_large'],
  );
  const mp = await (
    await post(
      '/v1/embeddings',
      form([
        ['a', img.svg, 'image/svg+xml'],
        ['b', img.png, 'image/png'],
      ]),
    )
  ).json();
  assert.equal(mp.data[0].code, 'unsupported_format');
  assert.ok(mp.data[1].embedding);
});

test('bad inputs: each gets the right 4xx and a JSON {error, code}, never a crash', async () => {
  const big = Buffer.alloc(limits.maxBytes + 1, 7);
  const ct = (t: string) => ({ 'content-type': t });
  const cases: [string, () => Promise<Response>, number, string][] = [
    ['zero bytes', () => post('/v1/embeddings', Buffer.alloc(0), ct('image/png')), 400, 'invalid_image'],
    ['truncated JPEG', () => post('/v1/embeddings', img.truncatedJpeg, ct('image/jpeg')), 400, 'invalid_image'],
    ['truncated PNG', () => post('/v1/embeddings', img.truncatedPng, ct('image/png')), 400, 'invalid_image'],
    ['tiny file claiming 50000x50000', () => post('/v1/embeddings', img.bomb, ct('image/png')), 422, 'image_too_large'],
    ['PNG claiming 0x0', () => post('/v1/embeddings', img.zeroDims, ct('image/png')), 400, 'invalid_image'],
    ['SVG', () => post('/v1/embeddings', img.svg, ct('image/svg+xml')), 415, 'unsupported_format'],
    [
      'SVG referencing a remote image',
      () => post('/v1/embeddings', img.svgRemote, ct('image/svg+xml')),
      415,
      'unsupported_format',
    ],
    ['SVG sent as PNG', () => post('/v1/embeddings', img.svg, ct('image/png')), 415, 'unsupported_format'],
    ['text with an image content-type', () => post('/v1/embeddings', img.text, ct('image/jpeg')), 400, 'invalid_image'],
    ['HTML as PNG', () => post('/v1/embeddings', img.html, ct('image/png')), 400, 'invalid_image'],
    ['BMP (not accepted)', () => post('/v1/embeddings', img.bmp, ct('image/bmp')), 400, 'invalid_image'],
    ['random bytes', () => post('/v1/embeddings', img.random, ct('image/webp')), 400, 'invalid_image'],
    ['animated GIF', () => post('/v1/embeddings', img.animated, ct('image/gif')), 422, 'animated_image'],
    ['image over the byte limit', () => post('/v1/embeddings', big, ct('image/png')), 413, 'payload_too_large'],
    [
      'huge JSON',
      () => post('/v1/embeddings', json({ images: [big.toString('base64').repeat(12)] }), ct('application/json')),
      413,
      'payload_too_large',
    ],
    // 1.5 MB of JSON in a few KB: the limit counts inflated bytes (a 600 MB one crashed the server).
    [
      'gzip body that inflates past the limit',
      () =>
        post('/v1/embeddings', gzipSync(json({ image: '$'.repeat(1_500_000) })), {
          ...ct('application/json'),
          'content-encoding': 'gzip',
        }),
      413,
      'payload_too_large',
    ],
    [
      'chunked multipart past the limit',
      () => chunked(form(new Array(6).fill(['f', Buffer.alloc(190_000, 9), 'image/png']))),
      413,
      'payload_too_large',
    ],
    ['invalid JSON', () => post('/v1/embeddings', '{"images": [', ct('application/json')), 400, 'invalid_json'],
    ['JSON without images', () => post('/v1/embeddings', json({}), ct('application/json')), 400, 'no_images'],
    [
      'JSON with an empty list',
      () => post('/v1/embeddings', json({ images: [] }), ct('application/json')),
      400,
      'bad_request',
    ],
    [
      'JSON with a number for an image',
      () => post('/v1/embeddings', json({ images: [42] }), ct('application/json')),
      400,
      'bad_request',
    ],
    [
      'JSON with an unknown field',
      () => post('/v1/embeddings', json({ images: [b64(img.png)], colour: 'red' }), ct('application/json')),
      400,
      'bad_request',
    ],
    ['JSON array body', () => post('/v1/embeddings', json([b64(img.png)]), ct('application/json')), 400, 'bad_request'],
    [
      'wrong base64',
      () => post('/v1/embeddings', json({ image: 'a$b%c' }), ct('application/json')),
      400,
      'invalid_base64',
    ],
    [
      'base64 of text',
      () => post('/v1/embeddings', json({ image: b64(img.text) }), ct('application/json')),
      400,
      'invalid_image',
    ],
    [
      'too many images',
      () => post('/v1/embeddings', json({ images: new Array(9).fill(b64(img.png)) }), ct('application/json')),
      400,
      'bad_request',
    ],
    ['text/plain body', () => post('/v1/embeddings', 'hello', ct('text/plain')), 415, 'unsupported_media_type'],
    [
      'no content-type',
      () => fetch(`${base}/v1/embeddings`, { method: 'POST', body: new Uint8Array([1, 2, 3]) }),
      415,
      'unsupported_media_type',
    ],
    ['multipart without files', () => post('/v1/embeddings', form([], { patches: 'true' })), 400, 'no_images'],
    [
      'multipart with too many files',
      () => post('/v1/embeddings', form(new Array(9).fill(['f', img.png, 'image/png']))),
      400,
      'bad_request',
    ],
    [
      'multipart file over the byte limit',
      () => post('/v1/embeddings', form([['f', big, 'image/png']])),
      413,
      'payload_too_large',
    ],
    [
      'malformed multipart',
      () => post('/v1/embeddings', '--xyz\r\nnot a part', ct('multipart/form-data; boundary=abc')),
      400,
      'bad_request',
    ],
    ['dtype float64', () => post('/v1/embeddings?dtype=float64', img.png, ct('image/png')), 400, 'bad_request'],
    ['patches=maybe', () => post('/v1/embeddings?patches=maybe', img.png, ct('image/png')), 400, 'bad_request'],
    ['top_k=0', () => post('/v1/classify?top_k=0', img.png, ct('image/png')), 400, 'bad_request'],
    ['top_k=0x3', () => post('/v1/classify?top_k=0x3', img.png, ct('image/png')), 400, 'bad_request'],
    [
      'binary response with a bad image',
      () =>
        post('/v1/embeddings', json({ images: [b64(img.png), b64(img.text)] }), {
          ...ct('application/json'),
          accept: 'application/octet-stream',
        }),
      400,
      'invalid_image',
    ],
    ['unknown route', () => fetch(`${base}/v1/nothing`), 404, 'not_found'],
    ['GET on a POST route', () => fetch(`${base}/v1/embeddings`), 404, 'not_found'],
  ];
  assert.ok(cases.length >= 30);
  for (const [name, send, status, code] of cases) {
    const r = await send();
    const text = await r.text();
    assert.equal(r.status, status, `${name}: ${r.status} ${text.slice(0, 200)}`);
    let body: { error?: unknown; code?: unknown };
    try {
      body = JSON.parse(text);
    } catch {
      assert.fail(`${name}: body is not JSON: ${text.slice(0, 100)}`);
    }
    assert.equal(body.code, code, `${name}: ${text.slice(0, 200)}`);
    assert.equal(typeof body.error, 'string', name);
  }
  // Still healthy after all that, and body-parser refusals are counted under their route.
  assert.equal((await post('/v1/embeddings', img.png, ct('image/png'))).status, 200);
  const metrics = await (await fetch(`${base}/metrics`)).text();
  assert.match(metrics, /ijepa_http_requests_total\{method="POST",route="\/v1\/embeddings",status="413"\} \d+/);
  assert.doesNotMatch(metrics, /ijepa_http_requests_total\{route="unmatched",status="4(00|13|15)"\}/);
});

test('concurrent requests are coalesced; beyond the queue limit the answer is 429 with Retry-After', async () => {
  const rs = await Promise.all(
    Array.from({ length: 16 }, () => post('/v1/embeddings', img.png, { 'content-type': 'image/png' })),
  );
  assert.ok(rs.every((r) => r.status === 200));
  const metrics = await (await fetch(`${base}/metrics`)).text();
  const sum = Number(/ijepa_batch_size_sum (\d+)/.exec(metrics)![1]);
  const count = Number(/ijepa_batch_size_count (\d+)/.exec(metrics)![1]);
  assert.ok(sum / count > 1, `mean batch ${sum / count}: requests were not coalesced`);

  const tight = await Service.open(makePackage(false), { ...limits, maxQueue: 2, maxWaitMs: 50 });
  const t = await listen(tight);
  const burst = await Promise.all(
    Array.from({ length: 12 }, () => post('/v1/embeddings', img.png, { 'content-type': 'image/png' }, t.base)),
  );
  const codes = burst.map((r) => r.status);
  assert.ok(codes.includes(429), `${codes}`);
  assert.ok(codes.includes(200), `${codes}`);
  const refused = burst.find((r) => r.status === 429)!;
  assert.equal(refused.headers.get('retry-after'), '1');
  assert.equal((await refused.json()).code, 'overloaded');
  t.server.close();
  await tight.close();
});

test('graceful shutdown: in-flight requests finish before the model is released', async () => {
  const { serve } = await import('../../serve/main.ts');
  const s = await serve({ model: makePackage(false), port: 0, host: '127.0.0.1', maxWaitMs: 300, maxBatch: 64 });
  const at = `http://127.0.0.1:${(s.server.address() as { port: number }).port}`;
  const inflight = Array.from({ length: 6 }, () =>
    post('/v1/embeddings', img.png, { 'content-type': 'image/png' }, at),
  );
  // Close once all six are decoded and waiting for their batch.
  while (s.service.batcher.pending < 6) await new Promise((r) => setTimeout(r, 2));
  const closing = s.close();
  const rs = await Promise.all(inflight);
  await closing;
  assert.deepEqual(
    rs.map((r) => r.status),
    new Array(6).fill(200),
  );
  await assert.rejects(fetch(`${at}/healthz`));
});

test('a busy port is an error naming the port, not a silent exit', async () => {
  const port = (server.address() as { port: number }).port;
  await assert.rejects(
    serve({ model: makePackage(false), port, host: '127.0.0.1' }),
    new RegExp(`port ${port} on 127.0.0.1 is already in use`),
  );
});

test('every image is decoded through the shared gate, weighted by what it costs to decode', async () => {
  const { default: sharp } = await import('sharp');
  const large = await sharp({ create: { width: 1200, height: 1000, channels: 3, background: '#777' } })
    .png()
    .toBuffer();
  const weights: number[] = [];
  const gate = service.decodeGate;
  const run = gate.run.bind(gate);
  gate.run = (w, task, signal, owner) => (weights.push(w), run(w, task, signal, owner));
  try {
    const r = await post('/v1/embeddings', json({ images: [b64(large), b64(img.png), b64(large)] }), {
      'content-type': 'application/json',
    });
    assert.equal(r.status, 200);
  } finally {
    gate.run = run;
  }
  const cost = [decodeCost('png', 1200, 1000), decodeCost('png', 20, 20)];
  assert.deepEqual(weights, [cost[0], cost[1], cost[0]]);
  assert.equal(gate.inUse, 0);
});

test('a request of many images leaves no listener-leak warning (each image listens on its request for cancellation)', async () => {
  const svc = await Service.open(makePackage(false), { ...limits, maxImages: 32, maxBatch: 4 });
  const t = await listen(svc);
  const warnings: string[] = [];
  const onWarning = (w: Error) => warnings.push(`${w.name}: ${w.message}`);
  process.on('warning', onWarning);
  try {
    const r = await post(
      '/v1/embeddings',
      json({ images: Array.from({ length: 32 }, () => b64(img.png)) }),
      {
        'content-type': 'application/json',
      },
      t.base,
    );
    assert.equal(r.status, 200);
    assert.equal((await r.json()).data.length, 32);
    await new Promise((go) => setImmediate(go));
  } finally {
    process.off('warning', onWarning);
    await new Promise((go) => t.server.close(go));
    await svc.close();
  }
  assert.deepEqual(warnings, []);
});
