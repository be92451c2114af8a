/**
 * The gallery in PostgreSQL + pgvector, against a real throwaway cluster (test/postgres.ts): the
 * routes' promises as the embedded store keeps them, MaxSim ranked as the embedded store ranks,
 * the encoder's identity and versioned migrations on connect, and replicas: several server
 * processes on one database see each other's writes, overlapping upserts leave every image once,
 * and a database that goes away is 503 on gallery routes until it is back, without a restart.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, test } from 'node:test';
import { Rng } from '../../model/rng.ts';
import { createApp } from '../../serve/app.ts';
import { Gallery, type Change, type NewImage } from '../../serve/gallery/gallery.ts';
import { PostgresStore, SCHEMA_VERSION } from '../../serve/gallery/postgres.ts';
import { Service } from '../../serve/service.ts';
import { Cluster, sql } from '../postgres.ts';
import { skipUnless } from '../requires.ts';
import { tempDir } from '../tmp.ts';
import { makePackage, pattern } from './fixtures.ts';
import { galleryRoutes } from './gallery-routes.ts';
import { addPng, startServer, type Running } from './processes.ts';

const skip = skipUnless('postgres');
const BIN = join(import.meta.dirname, '../../bin/ijepa.js');
const BUNDLED = join(import.meta.dirname, '../../models/fmnist-vit-tiny');
const pkg = makePackage(false);
const encoder: string = JSON.parse(readFileSync(join(pkg, 'manifest.json'), 'utf8')).files.encoder.sha256;
const identity = { modelId: 'tiny', dim: 32, encoder };

let started: Promise<Cluster> | undefined;
const cluster = () => (started ??= Cluster.start());
const servers: Running[] = [];
after(async () => {
  for (const s of servers) s.child.kill('SIGKILL');
  await (await started)?.stop();
});

/** Waits until `cond` holds, failing after `ms`. */
async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function listen(svc: Service) {
  const s = await new Promise<Server>((resolve) => {
    const srv = createApp(svc).listen(0, '127.0.0.1', () => resolve(srv));
  });
  return { server: s, base: `http://127.0.0.1:${(s.address() as { port: number }).port}` };
}

test('gallery over HTTP (PostgreSQL): the routes keep the embedded store’s promises; a new server on the database finds the same', {
  skip,
}, async () => {
  const url = await (await cluster()).database();
  const svc = await Service.open(pkg, { gallery: url, apiKey: 'sesame' });
  const { server, base } = await listen(svc);
  await galleryRoutes(base);
  assert.deepEqual(await (await fetch(`${base}/readyz`)).json(), { ready: true, model: 'tiny', gallery: 'ok' });
  server.close();
  await svc.close();

  const again = await Service.open(pkg, { gallery: url });
  assert.equal(await again.gallery!.size(), 3);
  assert.deepEqual([...(await again.gallery!.stored(['img-0', 'img-1', 'img-3']))].sort(), ['img-0', 'img-3']);
  await again.close();
});

test('reconstruct and the map over a PostgreSQL gallery: the hidden patches get their nearest gallery patches', {
  skip,
}, async () => {
  const svc = await Service.open(BUNDLED, { gallery: await (await cluster()).database() });
  const { server, base } = await listen(svc);
  for (let i = 0; i < 4; i++)
    assert.equal((await addPng(base, `g${i}`, await pattern(i, 32), { label: i % 2 })).status, 200);
  const r = await fetch(`${base}/v1/reconstruct?box=2,2,4,5&neighbours=3`, {
    method: 'POST',
    headers: { 'content-type': 'image/png' },
    body: new Uint8Array(await pattern(1, 32)),
  });
  assert.equal(r.status, 200, await r.clone().text());
  const body = await r.json();
  assert.equal(body.patches.length, 6);
  for (const p of body.patches) {
    assert.equal(p.neighbours.length, 3);
    assert.ok(p.neighbours[0].similarity >= p.neighbours[2].similarity);
    assert.ok(/^g[0-3]$/.test(p.neighbours[0].id) && p.neighbours[0].patch.every((v: number) => v >= 0 && v < 8));
  }
  const map = await (await fetch(`${base}/v1/map`)).json();
  assert.deepEqual(new Set(map.points.map((p: { label: string }) => p.label)), new Set(['0', '1']));
  assert.equal(map.version, map.galleryVersion);
  server.close();
  await svc.close();
});

test('connect checks the encoder and migrates once: replicas starting together on a new database, another model or encoder refused, a newer schema refused', {
  skip,
}, async () => {
  const url = await (await cluster()).database();
  const stores = await Promise.all(Array.from({ length: 6 }, () => PostgresStore.open(url, identity)));
  await Promise.all(stores.map((s) => s.close()));
  assert.deepEqual(await sql(url, 'SELECT version FROM ijepa_schema'), [{ version: SCHEMA_VERSION }]);
  assert.equal((await sql(url, 'SELECT * FROM ijepa_gallery')).length, 1);

  await assert.rejects(
    PostgresStore.open(url, { ...identity, modelId: 'other' }),
    /built with model 'tiny' \(dim 32\); this server runs 'other'/,
  );
  const other = 'f'.repeat(64);
  await assert.rejects(
    PostgresStore.open(url, { ...identity, encoder: other }),
    new RegExp(`built with encoder ${encoder.slice(0, 16)}.*encoder is ${other.slice(0, 16)}`),
  );
  await assert.rejects(Service.open(pkg, { gallery: url, reembed: true }), /cannot be re-embedded in place/);
  await sql(url, 'UPDATE ijepa_schema SET version = 99');
  await assert.rejects(PostgresStore.open(url, identity), /schema version 99; this server knows versions up to/);
});

test('MaxSim search (with a box and a candidate budget) and nearest patches rank as the embedded store ranks them', {
  skip,
}, async () => {
  const dim = 32;
  const rng = Rng.for(7, 'gallery-postgres');
  const centres = Array.from({ length: 24 }, () => Float32Array.from({ length: dim }, () => rng.normal()));
  const image = () => {
    const v = new Float32Array(16 * dim);
    for (let p = 0; p < 16; p++) {
      const c = centres[rng.int(centres.length)];
      for (let j = 0; j < dim; j++) v[p * dim + j] = c[j] + 0.5 * rng.normal();
    }
    return v;
  };
  const adds: NewImage[] = Array.from({ length: 150 }, (_, i) => {
    const patches = image();
    return { id: `s${i}`, patches, pooled: patches.subarray(0, dim), rows: 4, cols: 4, metadata: { i } };
  });
  const changes: Change[] = adds.map((add) => ({ add }));
  const embedded = Gallery.open(tempDir('ijepa-pg-vs-'), 'tiny', dim);
  const store = await PostgresStore.open(await (await cluster()).database(), identity);
  for (let s = 0; s < changes.length; s += 50) {
    embedded.commit(changes.slice(s, s + 50));
    assert.equal(await store.commit(changes.slice(s, s + 50)), Math.min(s + 50, changes.length));
  }
  for (const [q, box, candidates] of [
    [3, [0, 0, 4, 4], undefined],
    [77, [1, 1, 3, 4], undefined],
    [120, [0, 0, 4, 4], 8],
  ] as const) {
    const src = adds[q].patches;
    const positions: [number, number][] = [];
    const query: number[] = [];
    for (let r = box[0]; r < box[2]; r++)
      for (let c = box[1]; c < box[3]; c++) {
        positions.push([r, c]);
        for (let j = 0; j < dim; j++) query.push(src[(r * 4 + c) * dim + j] + 0.2 * rng.normal());
      }
    const args = [Float32Array.from(query), positions, src.subarray(0, dim), 5, true, { candidates }] as const;
    const want = await embedded.search(...args);
    const got = await store.search(...args);
    assert.equal(got[0].id, `s${q}`);
    assert.deepEqual(
      got.map((h) => h.id),
      want.map((h) => h.id),
    );
    got.forEach((h, i) => {
      assert.ok(Math.abs(h.score - want[i].score) < 1e-4, `${h.score} vs ${want[i].score}`);
      assert.ok(Math.abs(h.pooledScore! - want[i].pooledScore!) < 1e-4);
      assert.deepEqual(h.metadata, want[i].metadata);
      assert.deepEqual(
        h.matches.map((m) => [m.query, m.gallery]),
        want[i].matches.map((m) => [m.query, m.gallery]),
      );
    });
  }
  const queries = image().subarray(0, 4 * dim);
  const want = await embedded.nearestPatches(queries, 4, 5);
  const got = await store.nearestPatches(queries, 4, 5);
  assert.deepEqual(
    got.map((hits) => hits.map((h) => [h.id, h.patch])),
    want.map((hits) => hits.map((h) => [h.id, h.patch])),
  );
  got.flat().forEach((h, i) => assert.ok(Math.abs(h.similarity - want.flat()[i].similarity) < 1e-4));
  // Replaced and removed images are gone from both.
  const gone: Change[] = [{ remove: 's3' }, { remove: 'nothing' }];
  embedded.commit(gone);
  assert.equal(await store.commit(gone), 149);
  const after = await store.search(adds[3].patches.subarray(0, dim), [[0, 0]], adds[3].pooled, 100, false);
  assert.ok(!after.some((h) => h.id === 's3'));
  embedded.close();
  await store.close();
});

test('replicas: a write acknowledged by one server is found through another; two writers upserting overlapping ids leave every image once; ijepa index resumes into the database', {
  skip,
}, async () => {
  const url = await (await cluster()).database();
  const [a, b] = await Promise.all([startServer(pkg, ['--gallery', url]), startServer(pkg, ['--gallery', url])]);
  servers.push(a, b);
  assert.equal((await addPng(a.base, 'seen', await pattern(5))).status, 200);
  const found = await (
    await fetch(`${b.base}/v1/search?k=1`, {
      method: 'POST',
      headers: { 'content-type': 'image/png' },
      body: new Uint8Array(await pattern(5)),
    })
  ).json();
  assert.equal(found.hits[0].id, 'seen');
  assert.ok(found.hits[0].score > 0.999);
  assert.equal((await fetch(`${b.base}/v1/gallery/seen`, { method: 'DELETE' })).status, 200);
  assert.equal((await fetch(`${a.base}/v1/gallery/seen`)).status, 404);

  // Each server adds ids o0..o9 in requests of three, in opposite orders, all at once.
  const ids = Array.from({ length: 10 }, (_, i) => `o${i}`);
  const send = async (base: string, order: string[], seed: number) => {
    const out: number[] = [];
    for (let s = 0; s < order.length; s += 3) {
      const items = await Promise.all(
        order.slice(s, s + 3).map(async (id, k) => ({ id, image: (await pattern(seed + s + k)).toString('base64') })),
      );
      const r = await fetch(`${base}/v1/gallery`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ items }),
      });
      out.push(r.status);
    }
    return out;
  };
  const statuses = await Promise.all([
    send(a.base, ids, 0),
    send(b.base, [...ids].reverse(), 40),
    send(a.base, ids.slice(3), 80),
    send(b.base, ids.slice(0, 7).reverse(), 120),
  ]);
  assert.ok(
    statuses.flat().every((s) => s === 200),
    JSON.stringify(statuses),
  );
  const rows = await sql<{ id: string; patches: string }>(
    url,
    'SELECT i.id, (SELECT count(*) FROM ijepa_patches AS p WHERE p.image_id = i.id) AS patches FROM ijepa_images AS i ORDER BY i.id',
  );
  assert.deepEqual(
    rows.map((r) => [r.id, Number(r.patches)]),
    ids.map((id) => [id, 16]),
  );
  const [counter] = await sql<{ images: string }>(url, 'SELECT images FROM ijepa_gallery');
  assert.equal(Number(counter.images), ids.length, 'the size every answer reports counts each image once');
  const listed = await (await fetch(`${b.base}/v1/gallery?limit=50`)).json();
  assert.equal(listed.total, ids.length);

  const images = tempDir('ijepa-pg-index-');
  mkdirSync(join(images, 'sub'));
  for (let i = 0; i < 3; i++) writeFileSync(join(images, i ? `sub/p${i}.png` : 'p0.png'), await pattern(60 + i));
  // Not spawnSync: the servers' keep-alive connections must not go stale while this process is blocked.
  const index = async () =>
    JSON.parse(
      (
        await promisify(execFile)(process.execPath, [
          BIN,
          'index',
          '--model',
          pkg,
          '--images',
          images,
          '--gallery',
          url,
        ])
      ).stdout,
    );
  assert.deepEqual(await index(), { added: 3, skipped: 0, failed: 0, total: 3 });
  assert.deepEqual(await index(), { added: 0, skipped: 3, failed: 0, total: 3 });
  assert.equal((await fetch(`${a.base}/v1/gallery/sub/p2.png`)).status, 200);
  for (const s of [a, b]) s.child.kill('SIGKILL');
});

test('the database stopped mid-load: gallery routes answer 503 with a JSON error while embeddings go on and /readyz says so; restarted, the same server recovers, every acknowledged add present', {
  skip,
}, async () => {
  const db = await cluster();
  const url = await db.database();
  const s = await startServer(pkg, ['--gallery', url]);
  servers.push(s);
  const acked: string[] = [];
  const failed: { status: number; body: { code?: string; error?: string } }[] = [];
  let stop = false;
  const load = (async () => {
    for (let i = 0; !stop && s.child.exitCode === null; i++) {
      const r = await addPng(s.base, `m${i}`, await pattern(i % 20));
      const body = await r.json();
      if (r.status === 200) acked.push(`m${i}`);
      else failed.push({ status: r.status, body });
    }
  })();
  await until('5 acknowledged adds', () => acked.length >= 5 || failed.length > 0);
  assert.equal(failed.length, 0, JSON.stringify(failed));
  await db.stop();
  await until('3 refused adds', () => failed.length >= 3);
  for (const f of failed) {
    assert.equal(f.status, 503, JSON.stringify(f));
    assert.equal(f.body.code, 'gallery_unavailable');
    assert.match(f.body.error!, /is unavailable: the database cannot be reached/);
  }
  const search = await fetch(`${s.base}/v1/search`, {
    method: 'POST',
    headers: { 'content-type': 'image/png' },
    body: new Uint8Array(await pattern(1)),
  });
  assert.equal(search.status, 503);
  assert.equal(search.headers.get('retry-after'), '1');
  assert.equal((await search.json()).code, 'gallery_unavailable');
  const embedded = await fetch(`${s.base}/v1/embeddings`, {
    method: 'POST',
    headers: { 'content-type': 'image/png' },
    body: new Uint8Array(await pattern(1)),
  });
  assert.equal(embedded.status, 200);
  const down = await fetch(`${s.base}/readyz`);
  assert.equal(down.status, 200);
  assert.deepEqual(await down.json(), { ready: true, model: 'tiny', gallery: 'unavailable' });

  await db.resume();
  await until(
    '/readyz to say the gallery is back',
    async () => (await (await fetch(`${s.base}/readyz`)).json()).gallery === 'ok',
  );
  const before = acked.length;
  await until('3 more acknowledged adds', () => acked.length >= before + 3);
  stop = true;
  await load;
  for (const id of acked) assert.equal((await fetch(`${s.base}/v1/gallery/${id}`)).status, 200, id);
  assert.ok(
    failed.every((f) => f.status === 503),
    JSON.stringify(failed),
  );
  assert.ok(s.child.exitCode === null, 'the server kept running');
});
