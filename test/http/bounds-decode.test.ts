/**
 * What decoding costs the server, against a real server process at its default limits: shapes
 * that are costly to decode (1 × 1,000,000, claims of 1 × 39,999,999) are refused on their header,
 * a request of many small-but-costly images costs what its budget allows, a client that leaves
 * stops its decoding, and a client sending one small image at a time is served in turn while
 * others send many. CPU is read from /proc (the server's threads together), not wall time.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import sharp from 'sharp';
import { makePackage, pngClaiming } from './fixtures.ts';
import { cpuSeconds, percentiles, startServer, victim, type Running } from './processes.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A flat PNG (or AVIF): a few KB on the wire (a few hundred bytes) whatever its shape. */
const flat = async (width: number, height: number, format: 'png' | 'avif' = 'png') =>
  new Uint8Array(
    await sharp({ create: { width, height, channels: 3, background: '#777' } })
      .toFormat(format, format === 'avif' ? { effort: 0 } : { compressionLevel: 9 })
      .toBuffer(),
  );

const postPng = (base: string, png: Uint8Array<ArrayBuffer>, signal?: AbortSignal) =>
  fetch(`${base}/v1/embeddings`, { method: 'POST', headers: { 'content-type': 'image/png' }, body: png, signal });
const postJson = (base: string, pngs: Uint8Array[], signal?: AbortSignal) =>
  fetch(`${base}/v1/embeddings`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ images: pngs.map((b) => Buffer.from(b).toString('base64')) }),
    signal,
  });

/** The server's CPU seconds once it has stopped spending them (two quiet 250 ms reads in a row). */
async function settledCpu(pid: number): Promise<number> {
  let last = cpuSeconds(pid);
  let quiet = 0;
  for (let i = 0; i < 240 && quiet < 2; i++) {
    await sleep(250);
    const now = cpuSeconds(pid);
    quiet = now - last < 0.02 ? quiet + 1 : 0;
    last = now;
  }
  return last;
}

/** The server's CPU seconds spent on `f`, once it has settled. */
async function cpuOf(pid: number, f: () => Promise<void>): Promise<number> {
  const before = await settledCpu(pid);
  await f();
  return (await settledCpu(pid)) - before;
}

const LIBVIPS = /vips|spng|libpng|jpeg|GLib|reduce|shrink|load|Premature|temp-/i;

let server: Running;
let pid: number;
/** 1000 × 1000: under a megapixel (a size that skipped the decode gate) and ~4 KB. */
let mega: Uint8Array<ArrayBuffer>;
/** The same as a ~300-byte AVIF, several times as costly to decode. */
let megaAvif: Uint8Array<ArrayBuffer>;
let small: Uint8Array<ArrayBuffer>;

before(async () => {
  server = await startServer(makePackage(false), []);
  pid = server.child.pid!;
  mega = await flat(1000, 1000);
  megaAvif = await flat(1000, 1000, 'avif');
  small = await flat(28, 28);
});

after(async () => {
  server.child.kill('SIGTERM');
  await server.exited;
});

test('costly shapes are refused on their header with a 4xx naming the limit, for almost no CPU', async () => {
  const cases: [string, Uint8Array<ArrayBuffer>, RegExp][] = [
    ['1 × 1,000,000', await flat(1, 1_000_000), /longest side is 1000000 pixels; the limit is 16384/],
    ['1 × 39,999,999 (header)', new Uint8Array(pngClaiming(1, 39_999_999)), /the limit is 16384/],
    ['39,999,999 × 1 (header)', new Uint8Array(pngClaiming(39_999_999, 1)), /the limit is 16384/],
    ['40 × 2000', await flat(40, 2000), /aspect ratio is 50:1; the limit is 32:1/],
  ];
  for (const [name, png, message] of cases) {
    let answer: { status: number; body: { error: string; code: string } } | undefined;
    const cpu = await cpuOf(pid, async () => {
      const r = await postPng(server.base, png);
      answer = { status: r.status, body: await r.json() };
    });
    console.log(`${name}: ${answer!.status} ${JSON.stringify(answer!.body)} for ${cpu.toFixed(2)} CPU s`);
    assert.equal(answer!.status, 422, name);
    assert.match(answer!.body.error, message, name);
    assert.ok(cpu < 0.25, `${name}: ${cpu.toFixed(2)} CPU s`);
  }
  assert.doesNotMatch(server.log(), /CRITICAL/);
});

test("libvips' own messages never reach a client", async () => {
  const png = Buffer.from(await flat(64, 64));
  const jpeg = await sharp({ create: { width: 64, height: 48, channels: 3, background: '#a33' } })
    .jpeg()
    .toBuffer();
  for (const [name, bytes] of [
    ['truncated PNG', png.subarray(0, png.length - 20)],
    ['truncated JPEG', jpeg.subarray(0, jpeg.length / 2)],
  ] as const) {
    const r = await postPng(server.base, new Uint8Array(bytes));
    const body = await r.json();
    console.log(`${name}: ${r.status} ${JSON.stringify(body)}`);
    assert.equal(r.status, 400, name);
    assert.equal(body.code, 'invalid_image', name);
    assert.doesNotMatch(body.error, LIBVIPS, name);
  }
});

test('a request of 64 small-but-costly images is refused for at most 0.5 CPU s; 64 at the limits cost at most 1 CPU s', async () => {
  // 64 × 4 KB: the whole request is 340 KB of JSON.
  const tall = await flat(1, 1_000_000);
  let body: { data: { code?: string }[] } | undefined;
  const cpu = await cpuOf(pid, async () => {
    const r = await postJson(server.base, new Array(64).fill(tall));
    body = await r.json();
  });
  console.log(`64 × (1 × 1,000,000): ${cpu.toFixed(2)} CPU s; codes ${[...new Set(body!.data.map((d) => d.code))]}`);
  assert.ok(
    body!.data.every((d) => d.code === 'image_too_large'),
    JSON.stringify(body!.data[0]),
  );
  assert.ok(cpu < 0.5, `${cpu.toFixed(2)} CPU s`);
  // 64 × 450 bytes of AVIF, 4 megapixels each: over the request's decoding budget.
  const avif = await flat(2000, 2000, 'avif');
  let refused: { status: number; body: { error: string; code: string } } | undefined;
  const cpu2 = await cpuOf(pid, async () => {
    const r = await postJson(server.base, new Array(64).fill(avif));
    refused = { status: r.status, body: await r.json() };
  });
  console.log(
    `64 × 2000 × 2000 AVIF: ${refused!.status} ${JSON.stringify(refused!.body)} for ${cpu2.toFixed(2)} CPU s`,
  );
  assert.equal(refused!.status, 413);
  assert.match(refused!.body.error, /pixels' worth of decoding .*; the limit is 256000000/);
  assert.ok(cpu2 < 0.5, `${cpu2.toFixed(2)} CPU s`);
  // The narrowest the aspect limit lets through at that height costs about what its pixels do.
  const narrow = await flat(32, 1024);
  const cpu3 = await cpuOf(pid, async () => {
    const r = await postJson(server.base, new Array(64).fill(narrow));
    assert.equal(r.status, 200);
    await r.arrayBuffer();
  });
  console.log(`64 × (32 × 1024): ${cpu3.toFixed(2)} CPU s`);
  assert.ok(cpu3 < 1, `${cpu3.toFixed(2)} CPU s`);
});

test('a client that leaves after 300 ms leaves at most 0.4 CPU s of decoding behind', async () => {
  // Four requests of 30 megapixel AVIFs at once (each request within its decoding budget), ~10 CPU
  // seconds of decoding, then gone.
  const base0 = await settledCpu(pid);
  const ac = new AbortController();
  const sent = Array.from({ length: 4 }, () =>
    postJson(server.base, new Array(30).fill(megaAvif), ac.signal).catch(() => null),
  );
  await sleep(300);
  ac.abort();
  const atAbort = cpuSeconds(pid);
  await Promise.all(sent);
  const settled = await settledCpu(pid);
  const metrics = await (await fetch(`${server.base}/metrics`)).text();
  const cancelled = /^ijepa_cancelled_images_total (\d+)/m.exec(metrics)?.[1];
  console.log(
    `abort after 300 ms: ${(atAbort - base0).toFixed(2)} CPU s before, ${(settled - atAbort).toFixed(2)} CPU s after; ${cancelled} images cancelled in all`,
  );
  assert.ok(settled - atAbort < 0.4, `${(settled - atAbort).toFixed(2)} CPU s after the client left`);
});

test('a client sending one small image at a time keeps its p99 within 20× of its unloaded p99 while others send 64-image requests', async () => {
  await settledCpu(pid);
  const one = () => postPng(server.base, small);
  // Warm the connection pool and the batcher first.
  await victim(one, sleep(500));
  const quiet = percentiles(await victim(one, sleep(3000)));
  let stop = false;
  const attackers = Array.from({ length: 4 }, async () => {
    let n = 0;
    while (!stop) {
      const r = await postJson(server.base, new Array(64).fill(mega));
      await r.arrayBuffer();
      n++;
    }
    return n;
  });
  await sleep(300);
  const loaded = await victim(one, sleep(6000));
  stop = true;
  const requests = (await Promise.all(attackers)).reduce((a, b) => a + b, 0);
  const under = percentiles(loaded);
  console.log(
    `victim p50/p99: unloaded ${quiet.p50.toFixed(0)}/${quiet.p99.toFixed(0)} ms, under attack ${under.p50.toFixed(0)}/${under.p99.toFixed(0)} ms (${loaded.length} requests; the attack sent ${requests} requests of 64 megapixel images)`,
  );
  assert.ok(
    under.p99 <= 20 * Math.max(quiet.p99, 25),
    `p99 ${under.p99.toFixed(0)} ms under attack vs ${quiet.p99.toFixed(0)} ms unloaded`,
  );
  await settledCpu(pid);
});
