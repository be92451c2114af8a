/**
 * What the gallery routes promise, whichever store holds the gallery: run against a server started
 * with the API key `sesame` on an empty gallery (test/http/gallery.test.ts on a directory,
 * gallery-postgres.test.ts on a database). It leaves img-0, img-2 and img-3.
 */
import assert from 'node:assert/strict';
import { pattern } from './fixtures.ts';

const json = (v: unknown) => JSON.stringify(v);
const JSONH = { 'content-type': 'application/json' };

export async function galleryRoutes(base: string): Promise<void> {
  const imgs = await Promise.all([0, 1, 2, 3].map((seed) => pattern(seed)));
  const auth = { ...JSONH, 'x-api-key': 'sesame' };
  const denied = await fetch(`${base}/v1/gallery`, {
    method: 'POST',
    headers: JSONH,
    body: json({ id: 'a', image: imgs[0].toString('base64') }),
  });
  assert.equal(denied.status, 401);
  assert.equal((await denied.json()).code, 'unauthorized');
  const add = await fetch(`${base}/v1/gallery`, {
    method: 'POST',
    headers: auth,
    body: json({
      items: imgs
        .slice(0, 3)
        .map((b, i) => ({ id: `img-${i}`, image: b.toString('base64'), metadata: { n: i } }))
        .concat([{ id: 'bad', image: 'AAAA', metadata: { n: -1 } }]),
    }),
  });
  assert.equal(add.status, 200);
  const added = await add.json();
  assert.deepEqual(
    added.added.map((a: { id: string }) => a.id),
    ['img-0', 'img-1', 'img-2'],
  );
  assert.equal(added.errors[0].id, 'bad');
  const raw = await fetch(`${base}/v1/gallery?id=img-3&metadata=${encodeURIComponent('{"n":3}')}`, {
    method: 'POST',
    headers: { 'content-type': 'image/png', authorization: 'Bearer sesame' },
    body: new Uint8Array(imgs[3]),
  });
  assert.equal(raw.status, 200, await raw.clone().text());
  assert.deepEqual(
    await (await fetch(`${base}/v1/gallery/img-1`)).json().then((e) => [e.id, e.metadata, e.patches, e.grid]),
    ['img-1', { n: 1 }, 16, [4, 4]],
  );

  const res = await (
    await fetch(`${base}/v1/search`, {
      method: 'POST',
      headers: JSONH,
      body: json({ image: imgs[2].toString('base64'), k: 3, pooled: true }),
    })
  ).json();
  assert.equal(res.hits[0].id, 'img-2');
  assert.ok(res.hits[0].score > 0.999, `${res.hits[0].score}`);
  assert.ok(res.hits[0].pooledScore > 0.999);
  assert.equal(res.hits[0].matches.length, 16);
  // Each query patch's best match in the identical image is itself.
  for (const mt of res.hits[0].matches) assert.deepEqual(mt.gallery, mt.query);
  assert.ok(
    res.hits.length <= 3 &&
      res.hits.every((h: { score: number }, i: number, a: { score: number }[]) => i === 0 || a[i - 1].score >= h.score),
  );
  const boxed = await (
    await fetch(`${base}/v1/search?box=1,1,3,3&k=2`, {
      method: 'POST',
      headers: { 'content-type': 'image/png' },
      body: new Uint8Array(imgs[0]),
    })
  ).json();
  assert.equal(boxed.hits[0].id, 'img-0');
  assert.equal(boxed.hits[0].matches.length, 4);
  assert.deepEqual(boxed.box, [1, 1, 3, 3]);
  const badBox = await fetch(`${base}/v1/search?box=2,2,1,1`, {
    method: 'POST',
    headers: { 'content-type': 'image/png' },
    body: new Uint8Array(imgs[0]),
  });
  assert.equal(badBox.status, 400);

  // Pages in the order added; the pictures as the model saw them.
  const page = await (await fetch(`${base}/v1/gallery?offset=1&limit=2`)).json();
  assert.equal(page.total, 4);
  assert.deepEqual(
    page.items.map((x: { id: string }) => x.id),
    ['img-1', 'img-2'],
  );
  assert.deepEqual(page.items[0].metadata, { n: 1 });
  assert.equal(page.items[0].image, true);
  assert.ok(!Number.isNaN(Date.parse(page.items[0].addedAt)));
  const pic = await fetch(`${base}/v1/images/img-3`);
  assert.equal(pic.status, 200);
  assert.equal(pic.headers.get('content-type'), 'image/png');
  assert.equal((await fetch(`${base}/v1/images/nope`)).status, 404);
  // A replace moves the image to the end of the adding order, and the total stays.
  const replaced = await fetch(`${base}/v1/gallery`, {
    method: 'POST',
    headers: auth,
    body: json({ id: 'img-0', image: imgs[0].toString('base64'), metadata: { n: 0, again: true } }),
  });
  assert.equal((await replaced.json()).size, 4);
  const order = await (await fetch(`${base}/v1/gallery`)).json();
  assert.deepEqual(
    order.items.map((x: { id: string; metadata: { again?: boolean } }) => [x.id, x.metadata.again ?? false]),
    [
      ['img-1', false],
      ['img-2', false],
      ['img-3', false],
      ['img-0', true],
    ],
  );

  assert.equal((await fetch(`${base}/v1/gallery/img-1`, { method: 'DELETE' })).status, 401);
  assert.equal(
    (await fetch(`${base}/v1/gallery/img-1`, { method: 'DELETE', headers: { 'x-api-key': 'sesame' } })).status,
    200,
  );
  assert.equal((await fetch(`${base}/v1/gallery/img-1`)).status, 404);
  const after = await (
    await fetch(`${base}/v1/search`, {
      method: 'POST',
      headers: JSONH,
      body: json({ image: imgs[1].toString('base64'), k: 10 }),
    })
  ).json();
  assert.ok(!after.hits.some((h: { id: string }) => h.id === 'img-1'));

  // Ids with '/' (what `ijepa index` writes: paths) are reached by plain paths.
  const nested = await fetch(`${base}/v1/gallery`, {
    method: 'POST',
    headers: auth,
    body: json({ id: 'shoes/a.png', image: imgs[1].toString('base64') }),
  });
  assert.equal(nested.status, 200, await nested.clone().text());
  assert.equal((await (await fetch(`${base}/v1/gallery/shoes/a.png`)).json()).id, 'shoes/a.png');
  assert.equal(
    (await fetch(`${base}/v1/gallery/shoes/a.png`, { method: 'DELETE', headers: { 'x-api-key': 'sesame' } })).status,
    200,
  );
  assert.equal((await fetch(`${base}/v1/gallery/shoes%2Fa.png`)).status, 404);
  // Two items with one id: refused whole, nothing added (only the last would have been kept).
  const dup = await fetch(`${base}/v1/gallery`, {
    method: 'POST',
    headers: auth,
    body: json({
      items: [
        { id: 'twice', image: imgs[0].toString('base64') },
        { id: 'twice', image: imgs[1].toString('base64') },
      ],
    }),
  });
  assert.equal(dup.status, 400);
  assert.match((await dup.json()).error, /'twice' appears more than once/);
  assert.equal((await fetch(`${base}/v1/gallery/twice`)).status, 404);

  // The map is of the gallery as it is: the ids it holds, at its version.
  const map = await (await fetch(`${base}/v1/map`)).json();
  assert.deepEqual(new Set(map.points.map((p: { id: string }) => p.id)), new Set(['img-0', 'img-2', 'img-3']));
  assert.equal(map.version, map.galleryVersion);
  assert.equal(map.total, 3);
}
