/**
 * npm run bench:gallery — the embedded gallery (hnswlib in this process, a journal) and the
 * PostgreSQL one (pgvector) on the same patches, each through the store interface the server uses
 * (serve/gallery/store.ts). For each gallery size:
 *  1. build: every image added in requests of 64 images. Embedded: its HNSW graph grows as it
 *     goes. PostgreSQL: rows loaded with the HNSW index dropped, then CREATE INDEX (how a large
 *     gallery is bulk loaded), and up to BENCH_INCREMENTAL_UPTO patches also into a second
 *     database with the index kept as it goes (how adds through the server build it);
 *  2. single-patch search (nearestPatches, k 10): p50/p99, recall@10 against exact search;
 *  3. MaxSim search (64 query patches, top 10 images, at most 256 images scored exactly, as the
 *     server's default): p50/p99, recall@10 against exact MaxSim over every image;
 *  4. add throughput (images/s, requests of 32 images as `ijepa index` sends) with 1 writer, and
 *     for PostgreSQL 2 writer processes at once; the embedded store has one writer by design;
 *  5. up to BENCH_VECTOR_UPTO patches: pgvector single-patch recall of the gallery's
 *     `halfvec` index against a float32 `vector` index in its place (raw SQL, exact scan as truth).
 * Exact search is brute force in float64 arithmetic over the float32 vectors. The two stores'
 * queries alternate; throughput rounds alternate and report medians.
 * Data (seeded): 256 centres ~ N(0, I); a patch is a random centre plus N(0, 0.5² I), normalised;
 * images of 8×8 patches; a MaxSim query is a gallery image plus N(0, 0.1² I), a single-patch probe
 * a centre plus N(0, 0.5² I).
 * Environment: BENCH_PATCHES (100000,1000000), BENCH_DIM (192), BENCH_QUERIES (20), BENCH_PROBES
 * (200), BENCH_WRITE_IMAGES (256, per writer and round), BENCH_ROUNDS (3), BENCH_WRITERS_UPTO
 * (patches; larger galleries skip step 4), BENCH_INCREMENTAL_UPTO (100000), BENCH_VECTOR_UPTO (100000), BENCH_STORES
 * (embedded,postgres), BENCH_DATABASE_URL (a server on which this may create and drop databases
 * ijepa_bench_*; default a throwaway cluster from test/postgres.ts with shared_buffers 1GB and
 * fsync on).
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import pg from 'pg';
import { z } from 'zod';
import { Rng } from '../model/rng.ts';
import { EmbeddedStore } from '../serve/gallery/embedded.ts';
import { centred, Gallery, type Change } from '../serve/gallery/gallery.ts';
import { PostgresStore } from '../serve/gallery/postgres.ts';
import type { GalleryStore } from '../serve/gallery/store.ts';
import { Cluster } from '../test/postgres.ts';
import { tempDir } from '../test/tmp.ts';

const SEED = 11;
const GRID = 8;
const PER = GRID * GRID;
const K = 10;
const LOAD_BATCH = 64;
const WRITE_BATCH = 32;
const CANDIDATES = 256;

const list = (s: string) => s.split(',').map((x) => x.trim());
const Env = z.object({
  BENCH_PATCHES: z
    .string()
    .default('100000,1000000')
    .transform((s) => list(s).map(Number))
    .pipe(z.array(z.number().int().min(PER))),
  BENCH_DIM: z.coerce.number().int().min(8).default(192),
  BENCH_QUERIES: z.coerce.number().int().min(1).default(20),
  BENCH_PROBES: z.coerce.number().int().min(1).default(200),
  BENCH_WRITE_IMAGES: z.coerce.number().int().min(1).default(256),
  BENCH_ROUNDS: z.coerce.number().int().min(1).default(3),
  BENCH_WRITERS_UPTO: z.coerce.number().default(Number.POSITIVE_INFINITY),
  BENCH_INCREMENTAL_UPTO: z.coerce.number().default(100_000),
  BENCH_VECTOR_UPTO: z.coerce.number().default(100_000),
  BENCH_STORES: z
    .string()
    .default('embedded,postgres')
    .transform(list)
    .pipe(z.array(z.enum(['embedded', 'postgres']))),
  BENCH_DATABASE_URL: z.string().optional(),
  BENCH_WRITER: z.string().optional(),
  BENCH_EXACT: z.string().optional(),
});
const env = Env.parse(process.env);
const dim = env.BENCH_DIM;
const identity = { modelId: 'bench', dim, encoder: '0'.repeat(64) };

const pct = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];
const median = (xs: number[]) => pct(xs, 50);
const now = () => performance.timeOrigin + performance.now();
const ms = (x: number) => (x < 10 ? x.toFixed(2) : x.toFixed(0));
const s1 = (x: number) => x.toFixed(1);
const log = (s: string) => process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${s}\n`);

const centres = (() => {
  const r = Rng.for(SEED, 'bench-gallery-centres');
  return Array.from({ length: 256 }, () => Float32Array.from({ length: dim }, () => r.normal()));
})();

/** A unit vector: `c` plus N(0, noise² I). */
function noisy(r: Rng, c: Float32Array, noise: number, out: Float32Array, at: number): void {
  let n = 0;
  for (let j = 0; j < dim; j++) {
    const x = c[j] + noise * r.normal();
    out[at + j] = x;
    n += x * x;
  }
  const inv = 1 / Math.sqrt(n);
  for (let j = 0; j < dim; j++) out[at + j] *= inv;
}

/** Image `n`'s PER patches, written at `out[at..]`: the same for every process. */
function image(n: number, out = new Float32Array(PER * dim), at = 0): Float32Array {
  const r = Rng.for(SEED, 'bench-gallery-image', n);
  for (let p = 0; p < PER; p++) noisy(r, centres[r.int(centres.length)], 0.5, out, at + p * dim);
  return out;
}

const add = (id: string, patches: Float32Array): Change => ({
  add: { id, patches, pooled: patches.subarray(0, dim), rows: GRID, cols: GRID },
});

/** Images `from`… as requests of `batch`: fresh images, numbered apart from any gallery's. */
function writes(from: number, count: number, batch: number, prefix: string): Change[][] {
  const out: Change[][] = [];
  for (let s = 0; s < count; s += batch)
    out.push(
      Array.from({ length: Math.min(batch, count - s) }, (_, k) => add(`${prefix}${s + k}`, image(from + s + k))),
    );
  return out;
}

// A writer process (step 4): connects, says ready, waits for a line on stdin, writes, says when.
if (env.BENCH_WRITER) {
  const w = z
    .object({ url: z.string(), from: z.number(), count: z.number(), prefix: z.string() })
    .parse(JSON.parse(env.BENCH_WRITER));
  const store = await PostgresStore.open(w.url, identity);
  const requests = writes(w.from, w.count, WRITE_BATCH, w.prefix);
  process.stdout.write('ready\n');
  await new Promise((r) => createInterface({ input: process.stdin }).once('line', r));
  const start = now();
  for (const r of requests) await store.commit(r);
  process.stdout.write(`${JSON.stringify({ start, end: now() })}\n`);
  await store.close();
  process.exit(0);
}

/** Adds `count` images per writer with `writers` processes at once; images/s over all of them. */
async function pgWriters(url: string, writers: number, from: number, count: number, tag: string): Promise<number> {
  const children = Array.from({ length: writers }, (_, w) => {
    const child = spawn(process.execPath, ['--import', 'tsx', import.meta.filename], {
      env: {
        ...process.env,
        BENCH_WRITER: JSON.stringify({ url, from: from + w * count, count, prefix: `${tag}-w${w}-` }),
      },
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    const lines = createInterface({ input: child.stdout! });
    const next = () =>
      new Promise<string>((resolve, reject) => {
        lines.once('line', resolve);
        child.once('exit', (c) => reject(new Error(`writer exited ${c}`)));
      });
    return { child, next };
  });
  await Promise.all(children.map((c) => c.next()));
  const done = children.map((c) => c.next());
  for (const c of children) c.child.stdin!.write('go\n');
  const spans = (await Promise.all(done)).map((l) => JSON.parse(l) as { start: number; end: number });
  const wall = (Math.max(...spans.map((s) => s.end)) - Math.min(...spans.map((s) => s.start))) / 1000;
  return (writers * count) / wall;
}

/** Top-k insertion into descending `scores` with their `labels`. */
function offer(scores: Float64Array, labels: Int32Array, s: number, label: number): void {
  const k = scores.length;
  if (s <= scores[k - 1]) return;
  let i = k - 1;
  while (i > 0 && scores[i - 1] < s) {
    scores[i] = scores[i - 1];
    labels[i] = labels[i - 1];
    i--;
  }
  scores[i] = s;
  labels[i] = label;
}

/** a[ao..ao+dim] · b[bo..bo+dim], in float64, four running sums (the JIT keeps them in registers). */
function dot(a: Float32Array, ao: number, b: Float32Array, bo: number): number {
  let a0 = 0;
  let a1 = 0;
  let a2 = 0;
  let a3 = 0;
  let j = 0;
  for (; j + 3 < dim; j += 4) {
    a0 += a[ao + j] * b[bo + j];
    a1 += a[ao + j + 1] * b[bo + j + 1];
    a2 += a[ao + j + 2] * b[bo + j + 2];
    a3 += a[ao + j + 3] * b[bo + j + 3];
  }
  for (; j < dim; j++) a0 += a[ao + j] * b[bo + j];
  return a0 + a1 + a2 + a3;
}

/** Exact top-K images by MaxSim (mean over query patches of the best dot with the image's patches). */
function exactMaxSim(data: Float32Array, images: number, q: Float32Array): Set<string> {
  const nq = q.length / dim;
  const best = new Float64Array(nq);
  const scores = new Float64Array(K).fill(Number.NEGATIVE_INFINITY);
  const labels = new Int32Array(K);
  for (let n = 0; n < images; n++) {
    best.fill(Number.NEGATIVE_INFINITY);
    for (let p = 0; p < PER; p++) {
      const at = (n * PER + p) * dim;
      for (let i = 0; i < nq; i++) {
        const s = dot(q, i * dim, data, at);
        if (s > best[i]) best[i] = s;
      }
    }
    let total = 0;
    for (let i = 0; i < nq; i++) total += best[i];
    offer(scores, labels, total, n);
  }
  return new Set([...labels].map((n) => `i${n}`));
}

/**
 * Exact top-K patches of each probe by cosine of the centred vectors (what nearestPatches ranks
 * by), in one pass over the gallery: `image/patch` keys.
 */
function exactPatches(data: Float32Array, patches: number, probes: Float32Array[]): Set<string>[] {
  const qs = probes.map((p) => centred(p));
  const qSums = qs.map((q) => q.reduce((a, x) => a + x, 0));
  const scores = qs.map(() => new Float64Array(K).fill(Number.NEGATIVE_INFINITY));
  const labels = qs.map(() => new Int32Array(K));
  for (let t = 0; t < patches; t++) {
    const at = t * dim;
    let sum = 0;
    let power = 0;
    for (let j = 0; j < dim; j++) {
      const x = data[at + j];
      sum += x;
      power += x * x;
    }
    const spread = Math.sqrt(power - (sum * sum) / dim);
    for (let i = 0; i < qs.length; i++) {
      const q = qs[i];
      offer(scores[i], labels[i], (dot(q, 0, data, at) - (sum / dim) * qSums[i]) / spread, t);
    }
  }
  return labels.map((ls) => new Set([...ls].map((t) => `i${Math.floor(t / PER)}/${t % PER}`)));
}

/** The halfvec index the gallery's migration makes (serve/gallery/postgres.ts). */
const HALFVEC_INDEX = `CREATE INDEX ijepa_patches_hnsw ON ijepa_patches
  USING hnsw ((embedding::halfvec(${dim})) halfvec_ip_ops) WITH (m = 16, ef_construction = 64)`;
const BUILD_SETTINGS = "SET maintenance_work_mem = '4GB'";

/** A fresh database for `name`, its URL, and how to drop it. */
async function databases(): Promise<{
  create: (name: string) => Promise<string>;
  drop: (name: string) => Promise<void>;
  close: () => Promise<void>;
}> {
  let cluster: Cluster | undefined;
  let admin: string;
  if (env.BENCH_DATABASE_URL) admin = env.BENCH_DATABASE_URL;
  else {
    cluster = await Cluster.start({
      shared_buffers: '1GB',
      fsync: 'on',
      full_page_writes: 'on',
      max_wal_size: '8GB',
    });
    admin = cluster.url();
  }
  const run = async (sql: string) => {
    const c = new pg.Client({ connectionString: admin });
    await c.connect();
    try {
      await c.query(sql);
    } finally {
      await c.end();
    }
  };
  return {
    async create(name) {
      await run(`DROP DATABASE IF EXISTS ${name}`);
      await run(`CREATE DATABASE ${name}`);
      const u = new URL(admin);
      u.pathname = `/${name}`;
      return u.toString();
    },
    drop: (name) => run(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`),
    close: async () => {
      await cluster?.stop();
    },
  };
}

/** The gallery's patches [P, dim] (images i0… of PER), MaxSim queries and single-patch probes of a size. */
function workload(P: number): { data: Float32Array; queries: Float32Array[]; probes: Float32Array[] } {
  const images = P / PER;
  const data = new Float32Array(P * dim);
  for (let n = 0; n < images; n++) image(n, data, n * PER * dim);
  const rng = Rng.for(SEED, 'bench-gallery-queries', P);
  const queries = Array.from({ length: env.BENCH_QUERIES }, () => {
    const src = rng.int(images) * PER * dim;
    const q = new Float32Array(PER * dim);
    for (let p = 0; p < PER; p++) noisy(rng, data.subarray(src + p * dim, src + (p + 1) * dim), 0.1, q, p * dim);
    return q;
  });
  const probes = Array.from({ length: env.BENCH_PROBES }, () => {
    const v = new Float32Array(dim);
    noisy(rng, centres[rng.int(centres.length)], 0.5, v, 0);
    return v;
  });
  return { data, queries, probes };
}

/** Processes that share exact search (each makes the workload itself: it is seeded). */
const EXACT_PARTS = 2;
const Exact = z.object({ patches: z.array(z.array(z.string())), images: z.array(z.array(z.string())) });

// An exact-search process: the share `part` of the probes and queries of size P, as JSON.
if (env.BENCH_EXACT) {
  const { P, part } = z.object({ P: z.number(), part: z.number() }).parse(JSON.parse(env.BENCH_EXACT));
  const { data, queries, probes } = workload(P);
  const mine = <T>(xs: T[]) => xs.filter((_, i) => i % EXACT_PARTS === part);
  const out: z.infer<typeof Exact> = {
    patches: exactPatches(data, P, mine(probes)).map((s) => [...s]),
    images: mine(queries).map((q) => [...exactMaxSim(data, P / PER, q)]),
  };
  process.stdout.write(JSON.stringify(out));
  process.exit(0);
}

/** Exact top-K of every probe and query of size P, from EXACT_PARTS processes. */
async function truth(P: number): Promise<{ patches: Set<string>[]; images: Set<string>[] }> {
  const parts = await Promise.all(
    Array.from({ length: EXACT_PARTS }, async (_, part) => {
      const child = spawn(process.execPath, ['--import', 'tsx', import.meta.filename], {
        env: { ...process.env, BENCH_EXACT: JSON.stringify({ P, part }) },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      const code = await new Promise((r) => child.once('exit', r));
      if (code !== 0) throw new Error(`exact search process exited ${code}`);
      return Exact.parse(JSON.parse(out));
    }),
  );
  const merge = (key: 'patches' | 'images') => {
    const n = parts.reduce((a, p) => a + p[key].length, 0);
    return Array.from({ length: n }, (_, i) => new Set(parts[i % EXACT_PARTS][key][Math.floor(i / EXACT_PARTS)]));
  };
  return { patches: merge('patches'), images: merge('images') };
}

const dbs = env.BENCH_STORES.includes('postgres') ? await databases() : undefined;

for (const patches of env.BENCH_PATCHES) {
  const images = Math.floor(patches / PER);
  const P = images * PER;
  const rows: [string, string, string][] = [];
  const row = (what: string, embedded = '', postgres = '') => {
    rows.push([what, embedded, postgres]);
    log(`${P} | ${what} | ${embedded} | ${postgres}`);
  };
  log(`${P} patches (${images} images of ${PER}): generating, and exact search in ${EXACT_PARTS} processes`);
  let t = performance.now();
  const exact = truth(P);
  const { data, queries, probes } = workload(P);
  const { patches: truePatches, images: trueImages } = await exact;
  const exactS = (performance.now() - t) / 1000;
  log(`exact search done in ${s1(exactS)} s`);
  const load: Change[][] = [];
  for (let s = 0; s < images; s += LOAD_BATCH)
    load.push(
      Array.from({ length: Math.min(LOAD_BATCH, images - s) }, (_, k) =>
        add(`i${s + k}`, data.subarray((s + k) * PER * dim, (s + k + 1) * PER * dim)),
      ),
    );

  // 1. Build.
  const stores: { name: 'embedded' | 'postgres'; store: GalleryStore }[] = [];
  let embeddedBuild = '';
  let pgBuild = '';
  let pgIncremental = '';
  let pgIndexMiB = 0;
  let url = '';
  const dbName = `ijepa_bench_${P}`;
  if (env.BENCH_STORES.includes('embedded')) {
    const store = new EmbeddedStore(
      Gallery.open(tempDir('bench-gallery-'), 'bench', dim, () => {}, { encoder: identity.encoder }),
    );
    t = performance.now();
    for (const b of load) await store.commit(b);
    const s = (performance.now() - t) / 1000;
    embeddedBuild = `${s1(s)} s (${Math.round(P / s)} patches/s)`;
    stores.push({ name: 'embedded', store });
    log(`embedded build ${embeddedBuild}`);
  }
  if (dbs) {
    if (P <= env.BENCH_INCREMENTAL_UPTO) {
      const inc = await dbs.create(`${dbName}_inc`);
      const store = await PostgresStore.open(inc, identity);
      t = performance.now();
      for (const b of load) await store.commit(b);
      const s = (performance.now() - t) / 1000;
      pgIncremental = `${s1(s)} s (${Math.round(P / s)} patches/s)`;
      await store.close();
      await dbs.drop(`${dbName}_inc`);
      log(`postgres incremental build ${pgIncremental}`);
    }
    url = await dbs.create(dbName);
    const store = await PostgresStore.open(url, identity);
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    await c.query('DROP INDEX ijepa_patches_hnsw');
    t = performance.now();
    for (const b of load) await store.commit(b);
    const loadS = (performance.now() - t) / 1000;
    await c.query(BUILD_SETTINGS);
    t = performance.now();
    await c.query(HALFVEC_INDEX);
    const indexS = (performance.now() - t) / 1000;
    await c.query('ANALYZE');
    pgIndexMiB = Number((await c.query(`SELECT pg_relation_size('ijepa_patches_hnsw') AS b`)).rows[0].b) / 2 ** 20;
    const heap = await c.query(
      `SELECT pg_table_size('ijepa_patches') AS t, pg_indexes_size('ijepa_patches') AS i FROM ijepa_patches LIMIT 1`,
    );
    const tableMiB = Number(heap.rows[0].t) / 2 ** 20;
    await c.end();
    pgBuild = `load ${s1(loadS)} s + CREATE INDEX ${s1(indexS)} s = ${s1(loadS + indexS)} s`;
    log(`postgres bulk build ${pgBuild}; index ${pgIndexMiB.toFixed(0)} MiB, table ${tableMiB.toFixed(0)} MiB`);
    row(
      'patch table (heap + TOAST) and its HNSW index',
      '',
      `${tableMiB.toFixed(0)} MiB (${Math.round((tableMiB * 2 ** 20) / P)} B/patch), ${pgIndexMiB.toFixed(0)} MiB (${Math.round((pgIndexMiB * 2 ** 20) / P)} B/patch)`,
    );
    stores.push({ name: 'postgres', store });
  }
  row(`build: ${images} images added in requests of ${LOAD_BATCH}`, embeddedBuild, pgBuild);
  if (pgIncremental) row('build with the index kept as rows arrive (adds through the server)', '', pgIncremental);

  // 2 and 3. Searches, the stores alternating.
  const results = new Map<string, { lat: number[]; recall: number }>();
  const cell = (name: string, f: (r: { lat: number[]; recall: number }) => string) => {
    const r = results.get(name);
    return r ? f(r) : '';
  };
  const measure = async (
    kind: string,
    n: number,
    run: (store: GalleryStore, i: number) => Promise<Set<string>>,
    truth: Set<string>[],
  ) => {
    for (const { name } of stores) results.set(`${kind}-${name}`, { lat: [], recall: 0 });
    for (let w = 0; w < Math.min(3, n); w++) for (const { store } of stores) await run(store, w);
    for (let i = 0; i < n; i++)
      for (const { name, store } of i % 2 ? [...stores].reverse() : stores) {
        const t0 = performance.now();
        const got = await run(store, i);
        const r = results.get(`${kind}-${name}`)!;
        r.lat.push(performance.now() - t0);
        r.recall += [...got].filter((x) => truth[i].has(x)).length / K / n;
      }
  };
  await measure(
    'patch',
    probes.length,
    async (store, i) => {
      const [hits] = await store.nearestPatches(probes[i], 1, K);
      return new Set(hits.map((h) => `${h.id}/${h.patch[0] * GRID + h.patch[1]}`));
    },
    truePatches,
  );
  const positions = Array.from({ length: PER }, (_, p) => [Math.floor(p / GRID), p % GRID] as [number, number]);
  await measure(
    'maxsim',
    queries.length,
    async (store, i) => {
      const hits = await store.search(queries[i], positions, queries[i].subarray(0, dim), K, false, {
        candidates: CANDIDATES,
      });
      return new Set(hits.map((h) => h.id));
    },
    trueImages,
  );
  const lat = (r: { lat: number[] }) => `${ms(pct(r.lat, 50))} / ${ms(pct(r.lat, 99))} ms`;
  const rec = (r: { recall: number }) => r.recall.toFixed(3);
  row(
    `single patch, k ${K} (${probes.length} probes): p50 / p99`,
    cell('patch-embedded', lat),
    cell('patch-postgres', lat),
  );
  row(`single patch: recall@${K} against exact`, cell('patch-embedded', rec), cell('patch-postgres', rec));
  row(
    `MaxSim, ${PER} query patches, top ${K} (${queries.length} queries): p50 / p99`,
    cell('maxsim-embedded', lat),
    cell('maxsim-postgres', lat),
  );
  row(`MaxSim: recall@${K} against exact MaxSim`, cell('maxsim-embedded', rec), cell('maxsim-postgres', rec));

  // 4. Add throughput, rounds alternating.
  if (P <= env.BENCH_WRITERS_UPTO) {
    const W = env.BENCH_WRITE_IMAGES;
    const rates: Record<string, number[]> = { e1: [], p1: [], p2: [] };
    const embedded = stores.find((s) => s.name === 'embedded')?.store;
    for (let r = 0; r < env.BENCH_ROUNDS; r++) {
      const base = 10_000_000 + r * 10 * W;
      const steps: [string, () => Promise<number>][] = [];
      if (embedded) {
        const requests = writes(base, W, WRITE_BATCH, `r${r}-e-`);
        steps.push([
          'e1',
          async () => {
            const t0 = performance.now();
            for (const q of requests) await embedded.commit(q);
            return W / ((performance.now() - t0) / 1000);
          },
        ]);
      }
      if (url) {
        steps.push(['p1', () => pgWriters(url, 1, base + 2 * W, W, `r${r}-p1`)]);
        steps.push(['p2', () => pgWriters(url, 2, base + 4 * W, W, `r${r}-p2`)]);
      }
      for (const [k, f] of r % 2 ? steps.reverse() : steps) rates[k].push(await f());
      log(
        `writers round ${r}: ${JSON.stringify(Object.fromEntries(Object.entries(rates).map(([k, v]) => [k, v.at(-1)])))}`,
      );
    }
    const ips = (xs: number[]) => (xs.length ? `${Math.round(median(xs))} images/s` : '');
    row(
      `add, 1 writer (${W} images in requests of ${WRITE_BATCH}, median of ${env.BENCH_ROUNDS})`,
      ips(rates.e1),
      ips(rates.p1),
    );
    row('add, 2 writer processes at once (total)', embedded ? 'one writer by design' : '', ips(rates.p2));
  }

  // 5. halfvec against vector, single patches by raw inner product.
  if (url && P <= env.BENCH_VECTOR_UPTO) {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    const text = (v: Float32Array) => `[${v.join(',')}]`;
    const ids = async (sql: string, v: Float32Array) =>
      (await c.query(sql, [text(v)])).rows.map((r: { image_id: string; p: number }) => `${r.image_id}/${r.p}`);
    await c.query('SET enable_indexscan = off; SET enable_bitmapscan = off');
    const exact: Set<string>[] = [];
    for (const v of probes)
      exact.push(
        new Set(await ids(`SELECT image_id, p FROM ijepa_patches ORDER BY embedding <#> $1::vector LIMIT ${K}`, v)),
      );
    await c.query('RESET enable_indexscan; RESET enable_bitmapscan; SET hnsw.ef_search = 128');
    const sweep = async (sql: string) => {
      const lat: number[] = [];
      let hit = 0;
      for (const [n, v] of probes.entries()) {
        const t0 = performance.now();
        const got = await ids(sql, v);
        lat.push(performance.now() - t0);
        hit += got.filter((x) => exact[n].has(x)).length / K / probes.length;
      }
      return `recall ${hit.toFixed(3)}, p50 ${ms(pct(lat, 50))} ms`;
    };
    const half = await sweep(
      `SELECT image_id, p FROM ijepa_patches ORDER BY embedding::halfvec(${dim}) <#> $1::vector::halfvec(${dim}) LIMIT ${K}`,
    );
    await c.query('DROP INDEX ijepa_patches_hnsw');
    await c.query(BUILD_SETTINGS);
    t = performance.now();
    await c.query(
      'CREATE INDEX ijepa_patches_full ON ijepa_patches USING hnsw (embedding vector_ip_ops) WITH (m = 16, ef_construction = 64)',
    );
    const fullS = (performance.now() - t) / 1000;
    const full = await sweep(`SELECT image_id, p FROM ijepa_patches ORDER BY embedding <#> $1::vector LIMIT ${K}`);
    const fullMiB = Number((await c.query(`SELECT pg_relation_size('ijepa_patches_full') AS b`)).rows[0].b) / 2 ** 20;
    await c.end();
    row(
      "pgvector single patch by raw inner product (ef_search 128): `halfvec` index (the gallery's)",
      '',
      `${half}; ${pgIndexMiB.toFixed(0)} MiB`,
    );
    row('the same with a float32 `vector` index', '', `${full}; ${fullMiB.toFixed(0)} MiB, built in ${s1(fullS)} s`);
  }

  for (const { store } of stores) await store.close();
  if (url) await dbs!.drop(dbName);
  const table = [
    `| ${P.toLocaleString('en')} patches (${images.toLocaleString('en')} images × ${PER}), ${dim}-d | embedded (hnswlib) | PostgreSQL + pgvector |`,
    '| --- | --- | --- |',
    ...rows.map((r) => `| ${r.join(' | ')} |`),
  ].join('\n');
  console.log(`${table}\n`);
}
await dbs?.close();
process.exit(0);
