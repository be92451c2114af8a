/** Gallery: add/get/delete/search over HTTP, durability across kill -9, corruption detection. */
import { tempDir } from '../tmp.ts';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { appendFileSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Server } from 'node:http';
import { createApp } from '../../serve/app.ts';
import { Service } from '../../serve/service.ts';
import { Gallery, GalleryError } from '../../serve/gallery/gallery.ts';
import { makePackage, pattern } from './fixtures.ts';
import { galleryRoutes } from './gallery-routes.ts';

const BIN = join(import.meta.dirname, '../../bin/ijepa.js');
const pkg = makePackage(false);

async function listen(svc: Service) {
  const s = await new Promise<Server>((resolve) => {
    const srv = createApp(svc).listen(0, '127.0.0.1', () => resolve(srv));
  });
  return { server: s, base: `http://127.0.0.1:${(s.address() as { port: number }).port}` };
}

test('gallery over HTTP (embedded): add, get, list, search (MaxSim, box, pooled), delete, API key; reopened, the same', async () => {
  const dir = tempDir('ijepa-gal-');
  const svc = await Service.open(pkg, { gallery: dir, apiKey: 'sesame' });
  const { server, base } = await listen(svc);
  await galleryRoutes(base);
  server.close();
  await svc.close();

  // Reopened from the snapshot + journal: same contents.
  const again = Gallery.open(dir, 'tiny', 32);
  assert.equal(again.size, 3);
  assert.ok(again.has('img-3') && !again.has('img-1'));
  again.close();
  assert.throws(() => Gallery.open(dir, 'another-model', 32), /built with model 'tiny'/);
});

test('no gallery configured: 409', async () => {
  const svc = await Service.open(pkg);
  const { server, base } = await listen(svc);
  const r = await fetch(`${base}/v1/search`, {
    method: 'POST',
    headers: { 'content-type': 'image/png' },
    body: new Uint8Array(await pattern(1)),
  });
  assert.equal(r.status, 409);
  assert.equal((await r.json()).code, 'no_gallery');
  server.close();
  await svc.close();
});

test('every acknowledged add survives kill -9 of a real server process', async () => {
  const dir = tempDir('ijepa-kill-');
  const start = () => {
    const child = spawn(process.execPath, [BIN, 'serve', '--model', pkg, '--gallery', dir, '--port', '0'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const ready = new Promise<string>((resolve, reject) => {
      let buf = '';
      child.stderr.on('data', (d) => {
        buf += d;
        const m = /"address":"([\d.]+:\d+)"/.exec(buf);
        if (m) resolve(`http://${m[1]}`);
      });
      child.once('exit', (code) => reject(new Error(`server exited (${code}): ${buf}`)));
    });
    return { child, ready };
  };
  const a = start();
  const base = await a.ready;
  const acked: string[] = [];
  for (let i = 0; i < 6; i++) {
    const r = await fetch(`${base}/v1/gallery?id=k${i}`, {
      method: 'POST',
      headers: { 'content-type': 'image/png' },
      body: new Uint8Array(await pattern(i)),
    });
    assert.equal(r.status, 200);
    acked.push(`k${i}`);
  }
  // Kill while another add is in flight: it may or may not land, but the acknowledged ones must.
  void fetch(`${base}/v1/gallery?id=late`, {
    method: 'POST',
    headers: { 'content-type': 'image/png' },
    body: new Uint8Array(await pattern(9)),
  }).catch(() => {});
  a.child.kill('SIGKILL');
  await new Promise((r) => a.child.once('exit', r));
  assert.ok(!readdirSync(dir).includes('index.json'), 'no snapshot: recovery must come from the journal');

  const b = start();
  const base2 = await b.ready;
  for (const id of acked) assert.equal((await fetch(`${base2}/v1/gallery/${id}`)).status, 200, id);
  const hit = await (
    await fetch(`${base2}/v1/search?k=1`, {
      method: 'POST',
      headers: { 'content-type': 'image/png' },
      body: new Uint8Array(await pattern(4)),
    })
  ).json();
  assert.equal(hit.hits[0].id, 'k4');
  b.child.kill('SIGTERM');
  await new Promise((r) => b.child.once('exit', r));
});

test('a corrupt or truncated index is rebuilt from the journal; a corrupt journal is refused with a clear message; a torn last record is dropped', async () => {
  const dir = tempDir('ijepa-corrupt-');
  const g = Gallery.open(dir, 'm', 4);
  const v = (x: number) => Float32Array.from({ length: 8 }, (_, i) => Math.sin(i + x));
  g.add('one', v(1), v(1).subarray(0, 4), 1, 2);
  g.add('two', v(2), v(2).subarray(0, 4), 1, 2);
  g.close();
  const meta = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8'));
  const idx = join(dir, meta.file);
  const good = readFileSync(idx);
  writeFileSync(idx, good.subarray(0, good.length - 10));
  const said: string[] = [];
  const rebuilt = Gallery.open(dir, 'm', 4, (m) => said.push(m));
  assert.match(said.join('\n'), /corrupt or truncated.*rebuilding the index from journal\.log/);
  assert.equal(rebuilt.size, 2);
  assert.deepEqual(
    (await rebuilt.search(v(2).subarray(0, 4), [[0, 0]], v(2).subarray(0, 4), 1, false)).map((h) => h.id),
    ['two'],
  );
  rebuilt.close();
  assert.deepEqual(
    readFileSync(join(dir, JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')).file)).length > 0,
    true,
    'a good snapshot was written again',
  );

  const journal = join(dir, 'journal.log');
  const lines = readFileSync(journal, 'utf8');
  appendFileSync(journal, '0123456789abcdef {"op":"add","id":"tor'); // torn write, never acknowledged
  const reopened = Gallery.open(dir, 'm', 4);
  assert.equal(reopened.size, 2);
  reopened.close();
  assert.equal(readFileSync(journal, 'utf8'), lines, 'the torn record was truncated away');

  writeFileSync(journal, lines.replace('"one"', '"0ne"'));
  assert.throws(
    () => Gallery.open(dir, 'm', 4),
    (e: Error) => e instanceof GalleryError && /corrupt at record 1/.test(e.message),
  );
});

test('ijepa index builds a gallery from a folder and resumes without re-adding', async () => {
  const { spawnSync } = await import('node:child_process');
  const { mkdirSync } = await import('node:fs');
  const images = tempDir('ijepa-idx-img-');
  mkdirSync(join(images, 'sub'));
  for (let i = 0; i < 5; i++) writeFileSync(join(images, i < 3 ? `p${i}.png` : `sub/p${i}.png`), await pattern(i));
  writeFileSync(join(images, 'broken.png'), Buffer.from('nope'));
  const gdir = tempDir('ijepa-idx-gal-');
  const run = () =>
    spawnSync(process.execPath, [BIN, 'index', '--model', pkg, '--images', images, '--gallery', gdir, '--batch', '2'], {
      encoding: 'utf8',
    });
  const first = run();
  assert.equal(first.status, 0, first.stderr);
  assert.deepEqual(JSON.parse(first.stdout), { added: 5, skipped: 0, failed: 1, total: 6 });
  assert.match(first.stderr, /skipped broken\.png/);
  const second = run();
  assert.deepEqual(JSON.parse(second.stdout), { added: 0, skipped: 5, failed: 1, total: 6 });
  const g = Gallery.open(gdir, 'tiny', 32);
  assert.equal(g.size, 5);
  assert.ok(g.has('sub/p4.png'));
  g.close();
});
