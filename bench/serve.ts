/**
 * npm run bench:serve — serving throughput and gallery search, measured in one run:
 *  1. offline: batched onnxruntime throughput of the package's encoder (pre-decoded images);
 *  2. HTTP: POST /v1/embeddings (one PNG per request) at concurrency 1 and 32 against a server
 *     in a child process; throughput, p50/p99 latency, and the ratio to offline. The load comes
 *     from wrk when it is installed (apt-get install wrk; a C client leaves the CPU to the server),
 *     else from a fetch() loop in this process;
 *  3. gallery: HNSW search latency and recall@10 against exact search over clustered synthetic
 *     patch vectors (sizes from BENCH_GALLERY_SIZES, default 100000,1000000).
 *   BENCH_MODEL (models/fmnist-vit-tiny), BENCH_REQUESTS (400), BENCH_GALLERY_SIZES, BENCH_EF (64,128,256,512)
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import hnswlib from 'hnswlib-node';
import { Embedder } from '../runtime/embedder.ts';
import { Rng } from '../model/rng.ts';

const model = process.env.BENCH_MODEL ?? 'models/fmnist-vit-tiny';
const requests = Number(process.env.BENCH_REQUESTS ?? 400);
const sizes = (process.env.BENCH_GALLERY_SIZES ?? '100000,1000000').split(',').map(Number);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const pct = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];

// 1. Offline batched throughput.
const embedder = await Embedder.open(model);
const size = embedder.manifest.preprocess.size;
const rgb = Array.from({ length: 32 }, (_, i) =>
  Uint8Array.from({ length: size * size * 3 }, (_, j) => (i * 31 + j * 7) & 255),
);
await embedder.embed(rgb);
const offline: number[] = [];
for (let r = 0; r < 5; r++) {
  const t = performance.now();
  for (let k = 0; k < 4; k++) await embedder.embed(rgb);
  offline.push((4 * 32) / ((performance.now() - t) / 1000));
}
await embedder.close();
const offlineIps = median(offline);

// 2. HTTP, server in its own process.
const png = await sharp(Buffer.from(rgb[3]), { raw: { width: size, height: size, channels: 3 } })
  .png()
  .toBuffer();
const child = spawn(
  process.execPath,
  [join(import.meta.dirname, '../bin/ijepa.js'), 'serve', '--model', model, '--port', '0', '--max-queue', '4096'],
  { stdio: ['ignore', 'ignore', 'pipe'] },
);
const base = await new Promise<string>((resolve, reject) => {
  let buf = '';
  child.stderr.on('data', (d) => {
    buf += d;
    const m = /"address":"([\d.]+:\d+)"/.exec(buf);
    if (m) resolve(`http://${m[1]}`);
  });
  child.once('exit', (c) => reject(new Error(`server exited ${c}: ${buf}`)));
});
async function load(concurrency: number, n: number) {
  const lat: number[] = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) {
        next++;
        const t = performance.now();
        const r = await fetch(`${base}/v1/embeddings`, {
          method: 'POST',
          headers: { 'content-type': 'image/png' },
          body: new Uint8Array(png),
        });
        await r.arrayBuffer();
        if (r.status !== 200) throw new Error(`HTTP ${r.status}`);
        lat.push(performance.now() - t);
      }
    }),
  );
  return { ips: n / ((performance.now() - t0) / 1000), p50: pct(lat, 50), p99: pct(lat, 99) };
}
const hasWrk = spawnSync('wrk', ['--version']).error === undefined;
async function wrk(concurrency: number, seconds: number) {
  const dir = mkdtempSync(join(tmpdir(), 'ijepa-wrk-'));
  writeFileSync(join(dir, 'img.png'), png);
  writeFileSync(
    join(dir, 'post.lua'),
    `wrk.method = "POST"\nwrk.headers["Content-Type"] = "image/png"\nlocal f = io.open("${join(dir, 'img.png')}", "rb")\nwrk.body = f:read("*all")\nf:close()\n`,
  );
  const r = spawnSync(
    'wrk',
    ['-t1', `-c${concurrency}`, `-d${seconds}s`, '--latency', '-s', join(dir, 'post.lua'), `${base}/v1/embeddings`],
    { encoding: 'utf8' },
  );
  if (/Non-2xx/.test(r.stdout)) throw new Error(`wrk saw errors:\n${r.stdout}`);
  const ms = (label: string) => {
    const m = new RegExp(`${label}\\s+([\\d.]+)(us|ms|s)`).exec(r.stdout)!;
    return Number(m[1]) * (m[2] === 'us' ? 1e-3 : m[2] === 's' ? 1e3 : 1);
  };
  return { ips: Number(/Requests\/sec:\s+([\d.]+)/.exec(r.stdout)![1]), p50: ms('50%'), p99: ms('99%') };
}
await load(8, 64);
const c1 = hasWrk ? await wrk(1, 8) : await load(1, Math.max(50, requests / 4));
const c32 = hasWrk ? await wrk(32, 12) : await load(32, requests);
child.kill('SIGTERM');

console.log(
  `\nServing ${model} (${size}x${size}), onnxruntime 1 thread, one run on this machine; load from ${hasWrk ? 'wrk' : 'a fetch() loop in the bench process'}:\n`,
);
console.log('| measurement | img/s | p50 ms | p99 ms | vs offline |');
console.log('| --- | --- | --- | --- | --- |');
console.log(`| offline batched ORT (batch 32) | ${offlineIps.toFixed(0)} | | | 1.00 |`);
console.log(
  `| HTTP /v1/embeddings, concurrency 1 | ${c1.ips.toFixed(0)} | ${c1.p50.toFixed(1)} | ${c1.p99.toFixed(1)} | ${(c1.ips / offlineIps).toFixed(2)} |`,
);
console.log(
  `| HTTP /v1/embeddings, concurrency 32 | ${c32.ips.toFixed(0)} | ${c32.p50.toFixed(1)} | ${c32.p99.toFixed(1)} | ${(c32.ips / offlineIps).toFixed(2)} |`,
);

// 3. Gallery search: clustered vectors (embedding-like), HNSW vs exact.
const dim = 192;
console.log('\n| gallery patches | build s | search p50 ms | search p99 ms | recall@10 (ef) |');
console.log('| --- | --- | --- | --- | --- |');
for (const n of sizes) {
  const rng = new Rng(n);
  const centres = Array.from({ length: 256 }, () => Float32Array.from({ length: dim }, () => rng.normal()));
  const data = new Float32Array(n * dim);
  for (let i = 0; i < n; i++) {
    const c = centres[rng.int(centres.length)];
    let norm = 0;
    for (let j = 0; j < dim; j++) norm += (data[i * dim + j] = c[j] + 0.6 * rng.normal()) ** 2;
    for (let j = 0; j < dim; j++) data[i * dim + j] /= Math.sqrt(norm);
  }
  const index = new hnswlib.HierarchicalNSW('cosine', dim);
  index.initIndex(n, 16, 200, 100);
  const tb = performance.now();
  for (let i = 0; i < n; i++) index.addPoint(Array.from(data.subarray(i * dim, (i + 1) * dim)), i);
  const build = (performance.now() - tb) / 1000;
  const queries = 100;
  const qs: Float32Array[] = [];
  const exact: Set<number>[] = [];
  for (let q = 0; q < queries; q++) {
    const qi = rng.int(n);
    const qv = Float32Array.from(data.subarray(qi * dim, (qi + 1) * dim), (v) => v + 0.05 * rng.normal());
    // Exact top-10 by a linear scan with a small sorted buffer.
    const top: [number, number][] = [];
    for (let i = 0; i < n; i++) {
      let sc = 0;
      for (let j = 0; j < dim; j++) sc += qv[j] * data[i * dim + j];
      if (top.length < 10 || sc > top[top.length - 1][0]) {
        top.push([sc, i]);
        top.sort((a, b) => b[0] - a[0]);
        if (top.length > 10) top.pop();
      }
    }
    qs.push(qv);
    exact.push(new Set(top.map((t) => t[1])));
  }
  for (const ef of (process.env.BENCH_EF ?? '64,128,256,512').split(',').map(Number)) {
    index.setEf(ef);
    let hit = 0;
    const lat: number[] = [];
    qs.forEach((qv, q) => {
      const t = performance.now();
      const { neighbors } = index.searchKnn(Array.from(qv), 10);
      lat.push(performance.now() - t);
      hit += neighbors.filter((x) => exact[q].has(x)).length;
    });
    console.log(
      `| ${n.toLocaleString('en')} | ${build.toFixed(0)} | ${pct(lat, 50).toFixed(2)} | ${pct(lat, 99).toFixed(2)} | ${(hit / (queries * 10)).toFixed(3)} (${ef}) |`,
    );
  }
}
process.exit(0);
