/**
 * node --import tsx bench/gallery-postgres.ts — the PostgreSQL gallery beside the embedded one on
 * the same clustered synthetic patches (4×4 grids), on a throwaway cluster (test/postgres.ts):
 *  1. load: images added in requests of 64, one commit each (PostgreSQL keeps its HNSW index as it goes);
 *  2. MaxSim search (16 query patches, k 10): p50/p99 of each store, and recall@10 of each against
 *     exact MaxSim over every image;
 *  3. single-patch recall@10 of pgvector's HNSW against an exact scan, with the gallery's index
 *     (over the patches' `halfvec` form) and with a float32 `vector` index in its place.
 * BENCH_IMAGES (4000), BENCH_DIM (192), BENCH_QUERIES (30).
 */
import pg from 'pg';
import { Rng } from '../model/rng.ts';
import { Gallery, normalize, type Change } from '../serve/gallery/gallery.ts';
import { PostgresStore } from '../serve/gallery/postgres.ts';
import { Cluster } from '../test/postgres.ts';
import { tempDir } from '../test/tmp.ts';

const images = Number(process.env.BENCH_IMAGES ?? 4000);
const dim = Number(process.env.BENCH_DIM ?? 192);
const queries = Number(process.env.BENCH_QUERIES ?? 30);
const GRID = 16;
const pct = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];
const ms = (x: number) => x.toFixed(1);

const rng = Rng.for(11, 'bench-gallery-postgres');
const centres = Array.from({ length: 256 }, () => Float32Array.from({ length: dim }, () => rng.normal()));
const noisy = (c: Float32Array, noise: number) => Float32Array.from(c, (x) => x + noise * rng.normal());
const data = Array.from({ length: images }, () => {
  const v = new Float32Array(GRID * dim);
  for (let p = 0; p < GRID; p++) v.set(noisy(centres[rng.int(centres.length)], 0.5), p * dim);
  return normalize(v, dim);
});

const cluster = await Cluster.start();
const url = await cluster.database();
const identity = { modelId: 'bench', dim, encoder: '0'.repeat(64) };
const store = await PostgresStore.open(url, identity);
const embedded = Gallery.open(tempDir('bench-gallery-'), 'bench', dim);
const batches: Change[][] = [];
for (let s = 0; s < images; s += 64)
  batches.push(
    data.slice(s, s + 64).map((patches, k) => ({
      add: { id: `i${s + k}`, patches, pooled: patches.subarray(0, dim), rows: 4, cols: 4 },
    })),
  );

const rows: string[] = [];
let t = performance.now();
for (const b of batches) embedded.commit(b);
const embeddedLoad = (performance.now() - t) / 1000;
t = performance.now();
for (const b of batches) await store.commit(b);
const pgLoad = (performance.now() - t) / 1000;
rows.push(
  `| load ${images} images (${images * GRID} patches), requests of 64 | ${embeddedLoad.toFixed(1)} s (${Math.round(images / embeddedLoad)} img/s) | ${pgLoad.toFixed(1)} s (${Math.round(images / pgLoad)} img/s) |`,
);

/** The 10 images of highest MaxSim for query patches `q` [GRID, dim], by scoring every image. */
function exactTop(q: Float32Array): string[] {
  const scores = data.map((img, n) => {
    let total = 0;
    for (let i = 0; i < GRID; i++) {
      let best = -Infinity;
      for (let p = 0; p < GRID; p++) {
        let s = 0;
        for (let j = 0; j < dim; j++) s += q[i * dim + j] * img[p * dim + j];
        best = Math.max(best, s);
      }
      total += best;
    }
    return { id: `i${n}`, score: total };
  });
  return scores
    .sort((a, b) => b.score - a.score)
    .slice(0, 10)
    .map((s) => s.id);
}

const positions = Array.from({ length: GRID }, (_, p) => [Math.floor(p / 4), p % 4] as [number, number]);
const times = { embedded: [] as number[], pg: [] as number[] };
const recall = { embedded: 0, pg: 0 };
for (let n = 0; n < queries; n++) {
  const src = data[rng.int(images)];
  const q = normalize(noisy(src, 0.1), dim);
  const truth = new Set(exactTop(q));
  t = performance.now();
  const e = await embedded.search(q, positions, q.subarray(0, dim), 10, false, { candidates: 256 });
  times.embedded.push(performance.now() - t);
  t = performance.now();
  const p = await store.search(q, positions, q.subarray(0, dim), 10, false, { candidates: 256 });
  times.pg.push(performance.now() - t);
  recall.embedded += e.filter((h) => truth.has(h.id)).length / 10 / queries;
  recall.pg += p.filter((h) => truth.has(h.id)).length / 10 / queries;
}
rows.push(
  `| MaxSim search, 16 query patches, k 10: p50 / p99 | ${ms(pct(times.embedded, 50))} / ${ms(pct(times.embedded, 99))} ms | ${ms(pct(times.pg, 50))} / ${ms(pct(times.pg, 99))} ms |`,
  `| MaxSim recall@10 against exact MaxSim over every image | ${recall.embedded.toFixed(3)} | ${recall.pg.toFixed(3)} |`,
);
await store.close();
embedded.close();

// Single patches: HNSW (vector, then halfvec) against an exact scan, on the gallery's own table.
const c = new pg.Client({ connectionString: url });
await c.connect();
const probes = Array.from({ length: 200 }, () => normalize(noisy(centres[rng.int(centres.length)], 0.5), dim));
const text = (v: Float32Array) => `[${v.join(',')}]`;
const ids = async (sql: string, v: Float32Array) =>
  (await c.query(sql, [text(v)])).rows.map((r: { image_id: string; p: number }) => `${r.image_id}/${r.p}`);
await c.query('SET enable_indexscan = off');
await c.query('SET enable_bitmapscan = off');
const exact: Set<string>[] = [];
for (const v of probes)
  exact.push(new Set(await ids('SELECT image_id, p FROM ijepa_patches ORDER BY embedding <#> $1::vector LIMIT 10', v)));
await c.query('RESET enable_indexscan');
await c.query('RESET enable_bitmapscan');
await c.query(`SET hnsw.ef_search = 128`);
const measure = async (sql: string) => {
  const lat: number[] = [];
  let hit = 0;
  for (const [n, v] of probes.entries()) {
    const t0 = performance.now();
    const got = await ids(sql, v);
    lat.push(performance.now() - t0);
    hit += got.filter((x) => exact[n].has(x)).length / 10 / probes.length;
  }
  return { recall: hit, p50: pct(lat, 50) };
};
const size = async (index: string) =>
  Number((await c.query(`SELECT pg_relation_size('${index}') AS b`)).rows[0].b) / 2 ** 20;
// The gallery's own index and query form (halfvec), then a float32 index in its place.
const half = await measure(
  `SELECT image_id, p FROM ijepa_patches ORDER BY embedding::halfvec(${dim}) <#> $1::vector::halfvec(${dim}) LIMIT 10`,
);
const halfSize = await size('ijepa_patches_hnsw');
await c.query('DROP INDEX ijepa_patches_hnsw');
t = performance.now();
await c.query(
  'CREATE INDEX ijepa_patches_full ON ijepa_patches USING hnsw (embedding vector_ip_ops) WITH (m = 16, ef_construction = 64)',
);
const fullBuild = (performance.now() - t) / 1000;
const full = await measure('SELECT image_id, p FROM ijepa_patches ORDER BY embedding <#> $1::vector LIMIT 10');
const fullSize = await size('ijepa_patches_full');
await c.end();
await cluster.stop();
rows.push(
  `| single-patch recall@10 (ef_search 128), p50: halfvec index, the gallery's (${halfSize.toFixed(0)} MiB) | | ${half.recall.toFixed(3)}, ${ms(half.p50)} ms |`,
  `| single-patch recall@10 (ef_search 128), p50: vector index (${fullSize.toFixed(0)} MiB, built in ${fullBuild.toFixed(1)} s) | | ${full.recall.toFixed(3)}, ${ms(full.p50)} ms |`,
);
console.log(`| ${images} images × ${GRID} patches, ${dim}-d | embedded (hnswlib) | PostgreSQL + pgvector |`);
console.log('| --- | --- | --- |');
for (const r of rows) console.log(r);
process.exit(0);
