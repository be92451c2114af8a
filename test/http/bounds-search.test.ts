/**
 * The gallery's costly routes against real server processes: a search costs what its budget allows
 * whatever the gallery's size, searches and reconstructions wait in a bounded queue (429 beyond
 * it) and stop when their client leaves, and neither they nor the map's layout stall the event loop.
 * The galleries are built in-process (random embeddings) and then served.
 */
import assert from 'node:assert/strict';
import { cpSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { contentHash, describeFile, readPackage, writePackage } from '../../format/package.ts';
import { contextEncoderGraph, weightsIn } from '../../onnx/inference.ts';
import { Gallery } from '../../serve/gallery/gallery.ts';
import { tinyModel } from '../helpers.ts';
import { tempDir } from '../tmp.ts';
import { makePackage, pattern as patternPng } from './fixtures.ts';
import { cpuSeconds, percentiles, startServer, type Running } from './processes.ts';

const D = tinyModel.dim;
/** Under the search budget (maxSearchCandidates, 256 images), so its searches score every candidate. */
const SMALL = 250;
const LARGE = 2500;
const root = tempDir('ijepa-bounds-');

/** The tiny package with a context encoder beside its predictor, as `ijepa export` writes it. */
function packageWithContext(): string {
  const dir = makePackage(false);
  const pkg = readPackage(dir);
  const m = pkg.manifest;
  const files: Record<string, Uint8Array> = {};
  for (const [name, f] of Object.entries(m.files)) files[f.path] = pkg.file(name as keyof typeof m.files);
  files['context_encoder.onnx'] = contextEncoderGraph(
    tinyModel,
    weightsIn(files[m.files.encoder.path], m.files.encoder.path, tinyModel),
  );
  const described = { ...m.files, context: describeFile('context_encoder.onnx', files['context_encoder.onnx']) };
  writePackage(dir, { ...m, files: described, contentHash: contentHash(described) }, files);
  return dir;
}

/** A gallery of `images` images of random 4×4 patch embeddings, written in-process. */
function buildGallery(images: number): string {
  const dir = join(root, `g${images}`);
  const g = Gallery.open(dir, 'tiny', D);
  let s = images;
  const random = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32 - 0.5;
  for (let b = 0; b < images; b += 250) {
    g.commit(
      Array.from({ length: Math.min(250, images - b) }, (_, i) => ({
        add: {
          id: `img-${b + i}`,
          patches: Float32Array.from({ length: 16 * D }, random),
          pooled: Float32Array.from({ length: D }, random),
          rows: 4,
          cols: 4,
          metadata: { label: `c${(b + i) % 3}` },
        },
      })),
    );
  }
  g.close();
  return dir;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const post = (base: string, path: string, png: Uint8Array<ArrayBuffer>, signal?: AbortSignal) =>
  fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'image/png' }, body: png, signal });

/** Latencies (ms) of GET /healthz sent one at a time until `until` settles. */
async function healthz(base: string, until: Promise<unknown>): Promise<number[]> {
  let done = false;
  void until.finally(() => (done = true)).catch(() => {});
  const ms: number[] = [];
  while (!done) {
    const t0 = performance.now();
    await (await fetch(`${base}/healthz`)).arrayBuffer();
    ms.push(performance.now() - t0);
    await sleep(5);
  }
  return ms;
}

/** The longest event-loop delay the server saw since the previous call (prom-client resets it per scrape). */
async function loopLagMax(base: string): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  return Number(/^nodejs_eventloop_lag_max_seconds (\S+)/m.exec(text)?.[1] ?? Number.NaN) * 1000;
}

/** `n` concurrent requests: their statuses and retry-after headers. */
async function burst(n: number, request: () => Promise<Response>): Promise<{ status: number; retry: string | null }[]> {
  return Promise.all(
    Array.from({ length: n }, async () => {
      const r = await request();
      await r.arrayBuffer();
      return { status: r.status, retry: r.headers.get('retry-after') };
    }),
  );
}

let pkg: string;
let dirs: { small: string; large: string };
let small: Running;
let large: Running;
let query: Uint8Array<ArrayBuffer>;
const servers: Running[] = [];

before(async () => {
  pkg = packageWithContext();
  const t0 = performance.now();
  dirs = { small: buildGallery(SMALL), large: buildGallery(LARGE) };
  console.log(`built galleries of ${SMALL} and ${LARGE} images in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  // A copy for the in-process test: the servers hold the galleries' locks.
  cpSync(dirs.large, join(root, 'in-process'), { recursive: true });
  small = await startServer(pkg, ['--gallery', dirs.small]);
  large = await startServer(pkg, ['--gallery', dirs.large]);
  servers.push(small, large);
  query = new Uint8Array(await patternPng(7));
});

after(async () => {
  for (const s of servers) {
    s.child.kill('SIGTERM');
    await s.exited;
  }
});

test('a search or a patch lookup whose signal aborts stops at its next slice, with the reason given', async () => {
  const g = Gallery.open(join(root, 'in-process'), 'tiny', D);
  try {
    let s = 3;
    const random = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32 - 0.5;
    const q = Float32Array.from({ length: 16 * D }, random);
    const positions = Array.from({ length: 16 }, (_, i): [number, number] => [i >> 2, i & 3]);
    const gone = new Error('the client left');
    for (const run of [
      (signal: AbortSignal) => g.search(q, positions, q.subarray(0, D), 100, false, { signal }),
      (signal: AbortSignal) => g.nearestPatches(q, 16, 16, { signal }),
    ]) {
      const ac = new AbortController();
      const t0 = performance.now();
      const p = run(ac.signal);
      setImmediate(() => ac.abort(gone));
      await assert.rejects(p, gone);
      assert.ok(performance.now() - t0 < 100, `stopped after ${performance.now() - t0} ms`);
      const before = new AbortController();
      before.abort(gone);
      await assert.rejects(run(before.signal), gone, 'an aborted signal does no work');
    }
  } finally {
    g.close();
  }
});

test(`search CPU per request does not grow with the gallery: ${LARGE} images cost at most 1.6× ${SMALL}`, async () => {
  const perSearch = async (s: Running) => {
    const one = async () => {
      const r = await post(s.base, '/v1/search?k=100', query);
      assert.equal(r.status, 200, await r.clone().text());
      return (await r.json()).hits.length;
    };
    await one();
    const c0 = cpuSeconds(s.child.pid!);
    for (let i = 0; i < 20; i++) assert.equal(await one(), 100);
    return (cpuSeconds(s.child.pid!) - c0) / 20;
  };
  const a = await perSearch(small);
  const b = await perSearch(large);
  console.log(
    `CPU per k=100 search: ${(a * 1000).toFixed(1)} ms at ${SMALL} images, ${(b * 1000).toFixed(1)} ms at ${LARGE}`,
  );
  assert.ok(b <= 1.6 * a, `${LARGE} images: ${b} CPU-s per search; ${SMALL} images: ${a}`);
});

test('concurrent searches past the queue are refused 429 with retry-after; the others are answered', async () => {
  const got = await burst(40, () => post(large.base, '/v1/search?k=100', query));
  const refused = got.filter((g) => g.status === 429);
  console.log(`40 concurrent searches: ${got.length - refused.length} answered, ${refused.length} refused`);
  assert.ok(refused.length > 0, 'some are refused');
  assert.ok(refused.length < 40, 'some are answered');
  assert.ok(
    got.every((g) => g.status === 200 || g.status === 429),
    JSON.stringify(got),
  );
  assert.ok(
    refused.every((g) => Number(g.retry) >= 1),
    'a refusal says when to retry',
  );
  const r = await post(large.base, '/v1/search?k=100', query);
  assert.equal(r.status, 200, 'the queue empties');
});

test('searches whose clients leave stop: CPU spent after the abort is at most 0.25 s', async () => {
  const pid = large.child.pid!;
  const clients = Array.from({ length: 32 }, () => new AbortController());
  const sent = clients.map((c) => post(large.base, '/v1/search?k=100', query, c.signal).catch(() => null));
  await sleep(300);
  for (const c of clients) c.abort();
  await Promise.all(sent);
  await sleep(100);
  const c0 = cpuSeconds(pid);
  await sleep(2000);
  const spent = cpuSeconds(pid) - c0;
  console.log(`CPU in the 2 s after 32 searches were abandoned: ${spent.toFixed(2)} s`);
  assert.ok(spent <= 0.25, `${spent} CPU-s after the clients left`);
});

test('reconstruct: concurrent requests past the queue are refused 429, and they do not stall the event loop', async () => {
  const path = '/v1/reconstruct?box=0,0,4,3&neighbours=16';
  const got = await burst(40, () => post(large.base, path, query));
  const refused = got.filter((g) => g.status === 429);
  console.log(`40 concurrent reconstructs: ${got.length - refused.length} answered, ${refused.length} refused`);
  assert.ok(refused.length > 0 && refused.length < 40, JSON.stringify(got));
  assert.ok(
    got.every((g) => g.status === 200 || g.status === 429),
    JSON.stringify(got),
  );
  assert.ok(
    refused.every((g) => Number(g.retry) >= 1),
    'a refusal says when to retry',
  );

  // 16 clients reconstruct for 3 s (waiting a little after a refusal) while a victim reads /healthz.
  const idle = percentiles(await healthz(large.base, sleep(1000)));
  await loopLagMax(large.base);
  const stop = sleep(3000);
  let running = true;
  void stop.then(() => (running = false));
  let answered = 0;
  const load = Promise.all(
    Array.from({ length: 16 }, async () => {
      while (running) {
        const r = await post(large.base, path, query);
        await r.arrayBuffer();
        if (r.status === 200) answered++;
        else await sleep(50);
      }
    }),
  );
  const loaded = percentiles(await healthz(large.base, load));
  const lag = await loopLagMax(large.base);
  console.log(
    `/healthz idle p50 ${idle.p50.toFixed(1)} p99 ${idle.p99.toFixed(1)} ms; under 16 reconstruct clients (${answered} answered) p50 ${loaded.p50.toFixed(1)} p99 ${loaded.p99.toFixed(1)} ms; longest event-loop delay ${lag.toFixed(1)} ms`,
  );
  assert.ok(answered > 0);
  assert.ok(loaded.p50 <= 15, `/healthz p50 ${loaded.p50} ms under reconstruct load`);
});

test('the map is laid out off the event loop, and the previous layout is served while the next is made', async () => {
  const base = small.base;
  const map = async () => {
    const t0 = performance.now();
    const r = await fetch(`${base}/v1/map`);
    assert.equal(r.status, 200);
    return { body: await r.json(), ms: performance.now() - t0 };
  };
  await loopLagMax(base);
  const first = map();
  const during = await healthz(base, first);
  const a = await first;
  const lag = await loopLagMax(base);
  console.log(
    `first layout of ${a.body.points.length} points: ${a.ms.toFixed(0)} ms; meanwhile /healthz max ${Math.max(...during).toFixed(1)} ms, longest event-loop delay ${lag.toFixed(1)} ms`,
  );
  assert.equal(a.body.points.length, SMALL);
  assert.ok(lag <= 300, `the event loop stalled ${lag} ms while the map was laid out`);

  // A write makes the layout stale: the old one comes back at once, with the version it is of.
  const added = await post(base, '/v1/gallery?id=new-one', new Uint8Array(await patternPng(3)));
  assert.equal(added.status, 200);
  const b = await map();
  console.log(
    `map after a write: ${b.ms.toFixed(0)} ms, version ${b.body.version} of gallery version ${b.body.galleryVersion}`,
  );
  assert.ok(b.ms <= 500, `the stale map took ${b.ms} ms`);
  assert.equal(b.body.version, a.body.version);
  assert.ok(b.body.galleryVersion > b.body.version);
  assert.deepEqual(b.body.points, a.body.points);

  // The next layout arrives, the event loop free meanwhile.
  const next = (async () => {
    for (;;) {
      const c = await map();
      if (c.body.version === c.body.galleryVersion) return c;
      await sleep(100);
    }
  })();
  const meanwhile = await healthz(base, next);
  const c = await next;
  const lag2 = await loopLagMax(base);
  console.log(
    `next layout: version ${c.body.version}; meanwhile /healthz max ${Math.max(...meanwhile).toFixed(1)} ms, longest event-loop delay ${lag2.toFixed(1)} ms`,
  );
  assert.equal(c.body.points.length, SMALL + 1);
  assert.ok(lag2 <= 300, `the event loop stalled ${lag2} ms while the next map was laid out`);
});
