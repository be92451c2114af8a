/**
 * A gallery knows which encoder's embeddings it holds: another encoder under the same model id is
 * refused (serve and index), or re-embeds the stored pictures on --reembed, crash-safely; a gallery
 * from before the encoder was recorded adopts it.
 */
import { tempDir } from '../tmp.ts';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { Gallery, GalleryError } from '../../serve/gallery/gallery.ts';
import { Service } from '../../serve/service.ts';
import { makePackage, pattern } from './fixtures.ts';
import { addPng, startServer, type Running } from './processes.ts';

const BIN = join(import.meta.dirname, '../../bin/ijepa.js');
/** Two exports of one run folder: the same id, other encoder weights. */
const pkgA = makePackage(false);
const pkgB = makePackage(false, { seed: 2 });
const encoderOf = (pkg: string): string =>
  JSON.parse(readFileSync(join(pkg, 'manifest.json'), 'utf8')).files.encoder.sha256;
const [encA, encB] = [encoderOf(pkgA), encoderOf(pkgB)];
const root = tempDir('ijepa-identity-');
let dirs = 0;
const fresh = (name: string) => join(root, `${name}-${dirs++}`);
const recorded = (dir: string) => JSON.parse(readFileSync(join(dir, 'gallery.json'), 'utf8')).encoder;

/** Adds `count` images (ids `${prefix}${i}`) in requests of 50. */
async function addMany(base: string, prefix: string, count: number): Promise<void> {
  for (let s = 0; s < count; s += 50) {
    const items = await Promise.all(
      Array.from({ length: Math.min(50, count - s) }, async (_, k) => ({
        id: `${prefix}${s + k}`,
        image: (await pattern(s + k + 100)).toString('base64'),
      })),
    );
    const r = await fetch(`${base}/v1/gallery`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ items }),
    });
    assert.equal(r.status, 200, await r.text());
  }
}

async function topHit(base: string, png: Buffer): Promise<{ id: string; score: number }> {
  const r = await fetch(`${base}/v1/search?k=1`, {
    method: 'POST',
    headers: { 'content-type': 'image/png' },
    body: new Uint8Array(png),
  });
  assert.equal(r.status, 200);
  return (await r.json()).hits[0];
}

async function stop(s: Running): Promise<void> {
  s.child.kill('SIGTERM');
  assert.equal((await s.exited).code, 0, s.log());
}

/** Asserts that `text` refuses encoder B on a gallery of encoder A, naming both. */
function namesBoth(text: string): void {
  assert.match(text, new RegExp(`built with encoder ${encA.slice(0, 16)}`), text);
  assert.match(text, new RegExp(`encoder is ${encB.slice(0, 16)}`), text);
  assert.match(text, /--reembed/);
}

test('a package with the same id but another encoder is refused on a gallery the first built, by serve and by index, naming both encoders; a new probe head is not another encoder', async () => {
  assert.notEqual(encA, encB, 'the premise: the two packages differ in their encoder only');
  const dir = fresh('refused');
  const s = await startServer(pkgA, ['--gallery', dir]);
  const x = await pattern(1);
  assert.equal((await addPng(s.base, 'x', x)).status, 200);
  await stop(s);

  const served = await startServer(pkgB, ['--gallery', dir]).then(
    (r) => {
      r.child.kill('SIGKILL');
      return '';
    },
    (e: Error) => e.message,
  );
  assert.notEqual(served, '', 'the server started on a gallery built with another encoder');
  namesBoth(served);

  const images = fresh('images');
  mkdirSync(images);
  writeFileSync(join(images, 'p.png'), await pattern(2));
  const index = spawnSync(process.execPath, [BIN, 'index', '--model', pkgB, '--images', images, '--gallery', dir], {
    encoding: 'utf8',
  });
  assert.notEqual(index.status, 0, 'ijepa index added to a gallery of another encoder');
  namesBoth(index.stderr);
  assert.equal(recorded(dir), encA, 'the refusals changed nothing');

  // The same encoder with a probe head added: the gallery's embeddings are still this encoder's.
  const probed = makePackage(true, { id: 'tiny' });
  assert.equal(encoderOf(probed), encA);
  const svc = await Service.open(probed, { gallery: dir });
  assert.ok(await svc.gallery?.get('x'));
  await svc.close();
});

test('a gallery written before the encoder was recorded opens, adopts the encoder and says so; then another encoder is refused', () => {
  const dir = fresh('adopt');
  Gallery.open(dir, 'tiny', 32).close();
  const meta = JSON.parse(readFileSync(join(dir, 'gallery.json'), 'utf8'));
  delete meta.encoder;
  writeFileSync(join(dir, 'gallery.json'), JSON.stringify(meta));
  const said: string[] = [];
  Gallery.open(dir, 'tiny', 32, (m) => said.push(m), { encoder: encA }).close();
  assert.match(said.join('\n'), new RegExp(`recorded no encoder.*adopting.*${encA.slice(0, 16)}`));
  assert.equal(recorded(dir), encA);
  assert.throws(
    () => Gallery.open(dir, 'tiny', 32, () => {}, { encoder: encB }),
    (e: Error) => e instanceof GalleryError && e.kind === 'mismatch' && (namesBoth(e.message), true),
  );
});

test('--reembed re-embeds the stored pictures with the new encoder, so an image finds itself at 1.000 again; killed mid-way, or crashed either side of its switch, it leaves a gallery that opens', async () => {
  const dir = fresh('reembed');
  const s = await startServer(pkgA, ['--gallery', dir]);
  const x = await pattern(1);
  assert.equal((await addPng(s.base, 'x', x, { kind: 'probe' })).status, 200);
  await addMany(s.base, 'img', 150);
  const before = await topHit(s.base, x);
  await stop(s);
  const saved = fresh('saved');
  mkdirSync(saved);
  for (const f of ['gallery.json', 'journal.log']) copyFileSync(join(dir, f), join(saved, `old-${f}`));

  // kill -9 as soon as the re-embedded journal starts to appear.
  const child = spawn(process.execPath, [BIN, 'serve', '--model', pkgB, '--port', '0', '--gallery', dir, '--reembed'], {
    stdio: 'ignore',
  });
  const exited = new Promise((r) => child.once('exit', r));
  let midway = false;
  for (const t0 = Date.now(); !midway && Date.now() - t0 < 30_000; await new Promise((r) => setTimeout(r, 1)))
    midway = readdirSync(dir).some((f) => f.startsWith('journal.log.reembed-'));
  child.kill('SIGKILL');
  await exited;
  const left = recorded(dir);
  console.log(
    `reembed: killed ${midway ? 'while the new journal was being written' : 'after it'}; gallery.json then named the ${left === encA ? 'old' : 'new'} encoder`,
  );
  // What the kill left opens, with the encoder gallery.json names, holding every image.
  const g = Gallery.open(dir, 'tiny', 32, () => {}, { encoder: left });
  assert.equal(g.size, 151);
  g.close();
  assert.ok(!readdirSync(dir).some((f) => f.startsWith('journal.log.reembed-')), 'the staged journal is gone');

  const r = await startServer(pkgB, ['--gallery', dir, '--reembed']);
  const hit = await topHit(r.base, x);
  console.log(
    `reembed: with encoder A 'x' found '${before.id}' at ${before.score.toFixed(4)}; after --reembed with encoder B it finds '${hit.id}' at ${hit.score.toFixed(4)}`,
  );
  assert.equal(hit.id, 'x');
  assert.ok(hit.score > 0.9995, `score ${hit.score}`);
  assert.deepEqual((await (await fetch(`${r.base}/v1/gallery/x`)).json()).metadata, { kind: 'probe' });
  assert.equal((await (await fetch(`${r.base}/v1/gallery?limit=1`)).json()).total, 151);
  await stop(r);
  if (left === encA) assert.match(r.log(), /re-embedded 151 images .* with encoder/);
  assert.equal(recorded(dir), encB);
  for (const f of ['gallery.json', 'journal.log']) copyFileSync(join(dir, f), join(saved, `new-${f}`));
  // Recorded now: B opens it without the flag, A is refused.
  Gallery.open(dir, 'tiny', 32, () => {}, { encoder: encB }).close();
  assert.throws(() => Gallery.open(dir, 'tiny', 32, () => {}, { encoder: encA }), /built with encoder/);

  // A crash between the switch (gallery.json) and the rename, and one before the switch.
  const staged = join(dir, `journal.log.reembed-${encB.slice(0, 16)}`);
  const crashed = (meta: 'old' | 'new') => {
    copyFileSync(join(saved, `${meta}-gallery.json`), join(dir, 'gallery.json'));
    copyFileSync(join(saved, 'old-journal.log'), join(dir, 'journal.log'));
    copyFileSync(join(saved, 'new-journal.log'), staged);
    writeFileSync(join(dir, 'index.json'), 'stale');
  };
  const said: string[] = [];
  crashed('new');
  Gallery.open(dir, 'tiny', 32, (m) => said.push(m), { encoder: encB }).close();
  assert.deepEqual(readFileSync(join(dir, 'journal.log')), readFileSync(join(saved, 'new-journal.log')));
  assert.ok(!existsSync(staged));
  crashed('old');
  Gallery.open(dir, 'tiny', 32, (m) => said.push(m), { encoder: encA }).close();
  assert.deepEqual(readFileSync(join(dir, 'journal.log')), readFileSync(join(saved, 'old-journal.log')));
  assert.ok(!existsSync(staged));
  assert.match(said.join('\n'), /completing the re-embedding.*\n(.*\n)*.*discarding a re-embedding/);
});

test('--reembed refuses, changing nothing, when an image has no stored picture (added by ijepa index)', async () => {
  const dir = fresh('nopicture');
  const g = Gallery.open(dir, 'tiny', 32, () => {}, { encoder: encA });
  const v = Float32Array.from({ length: 16 * 32 }, (_, i) => Math.sin(i));
  g.add('p.png', v, v.subarray(0, 32), 4, 4, { path: 'p.png' });
  g.close();
  const journal = readFileSync(join(dir, 'journal.log'));
  await assert.rejects(
    Gallery.reembed(dir, { modelId: 'tiny', dim: 32, encoder: encB }, async () => assert.fail('embedded')),
    /1 of 1 images have no stored picture \('p.png'\)/,
  );
  assert.deepEqual(readFileSync(join(dir, 'journal.log')), journal);
  assert.equal(recorded(dir), encA);
  assert.deepEqual(
    readdirSync(dir).filter((f) => f.includes('reembed')),
    [],
  );
});
