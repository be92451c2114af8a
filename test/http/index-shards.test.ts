/**
 * `ijepa index --shard i/n`: n processes index one folder into one PostgreSQL gallery at once,
 * each its own share, every image once, a rerun adding nothing; the embedded store, one writer
 * only, refuses a second `ijepa index` while another holds it, saying who.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, test } from 'node:test';
import pg from 'pg';
import { openStore } from '../../serve/gallery/open.ts';
import { shareOf } from '../../serve/shard.ts';
import { Cluster } from '../postgres.ts';
import { skipUnless } from '../requires.ts';
import { tempDir } from '../tmp.ts';
import { makePackage, pattern } from './fixtures.ts';

const BIN = join(import.meta.dirname, '../../bin/ijepa.js');
const pkg = makePackage(false);
const manifest = JSON.parse(readFileSync(join(pkg, 'manifest.json'), 'utf8'));
const run = promisify(execFile);

let started: Promise<Cluster> | undefined;
after(async () => {
  await (await started)?.stop();
});

interface Result {
  added: number;
  skipped: number;
  failed: number;
  total: number;
}

async function index(images: string, gallery: string, shard?: string): Promise<Result> {
  const args = [BIN, 'index', '--model', pkg, '--images', images, '--gallery', gallery, '--threads', '1'];
  const { stdout } = await run(process.execPath, shard ? [...args, '--shard', shard] : args);
  return JSON.parse(stdout);
}

/** A folder of `n` small images, some in subfolders (ids are paths relative to it). */
async function folder(n: number): Promise<string[]> {
  const dir = tempDir('ijepa-shards-');
  mkdirSync(join(dir, 'a'));
  mkdirSync(join(dir, 'b/c'), { recursive: true });
  const ids = Array.from({ length: n }, (_, i) => `${['', 'a/', 'b/c/'][i % 3]}img${i}.png`);
  for (const [i, id] of ids.entries()) writeFileSync(join(dir, id), await pattern(i));
  return [dir, ...ids];
}

test('three ijepa index --shard i/3 at once into one PostgreSQL gallery: disjoint shares covering the folder, every image once, a rerun adds nothing', {
  skip: skipUnless('postgres'),
}, async () => {
  const [dir, ...ids] = await folder(15);
  const url = await (await (started ??= Cluster.start())).database();
  const share = (i: number) => ids.filter((id) => shareOf(id, 3) === i).length;

  // One share first, so the parallel run below resumes a run under way.
  assert.deepEqual(await index(dir, url, '1/3'), { added: share(1), skipped: 0, failed: 0, total: share(1) });
  const first = await Promise.all(['0/3', '1/3', '2/3'].map((s) => index(dir, url, s)));
  assert.deepEqual(first, [
    { added: share(0), skipped: 0, failed: 0, total: share(0) },
    { added: 0, skipped: share(1), failed: 0, total: share(1) },
    { added: share(2), skipped: 0, failed: 0, total: share(2) },
  ]);
  assert.ok(
    [0, 1, 2].every((i) => share(i) > 0),
    'every process had work',
  );
  assert.equal(share(0) + share(1) + share(2), ids.length);

  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const rows = await c.query<{ id: string; patches: string }>(
      'SELECT i.id, (SELECT count(*) FROM ijepa_patches AS p WHERE p.image_id = i.id) AS patches FROM ijepa_images AS i ORDER BY i.id',
    );
    const patches = manifest.patches.rows * manifest.patches.cols;
    assert.deepEqual(
      rows.rows.map((r) => [r.id, Number(r.patches)]),
      [...ids].sort().map((id) => [id, patches]),
    );
    const counter = await c.query<{ images: string }>('SELECT images FROM ijepa_gallery');
    assert.equal(Number(counter.rows[0].images), ids.length);
  } finally {
    await c.end();
  }

  const again = await Promise.all(['0/3', '1/3', '2/3'].map((s) => index(dir, url, s)));
  assert.deepEqual(
    again,
    [0, 1, 2].map((i) => ({ added: 0, skipped: share(i), failed: 0, total: share(i) })),
  );
});

test('the embedded gallery has one writer: a second ijepa index is refused, naming the process that holds it', async () => {
  const [dir, ...ids] = await folder(4);
  const gallery = tempDir('ijepa-shards-embedded-');
  const holder = await openStore(gallery, {
    modelId: manifest.id,
    dim: manifest.embeddingDim,
    encoder: manifest.files.encoder.sha256,
  });
  try {
    await assert.rejects(index(dir, gallery, '0/2'), (e: { code: number; stderr: string }) => {
      assert.notEqual(e.code, 0);
      assert.match(e.stderr, new RegExp(`is open for writing by process ${process.pid} .*stop it first`));
      return true;
    });
  } finally {
    await holder.close();
  }
  const shares = [await index(dir, gallery, '0/2'), await index(dir, gallery, '1/2')];
  assert.equal(shares[0].added + shares[1].added, ids.length);
});
