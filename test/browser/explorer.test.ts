/**
 * The explorer page in a real browser (Debian's Chromium, driven by playwright-core): a real
 * server with the bundled model and a gallery of the test fixtures. Screenshots of each state go
 * to test-artifacts/explorer/. Without Chromium these tests are skipped, saying what to install
 * (test/requires.ts), or fail where IJEPA_REQUIRE names browser.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { Gallery } from '../../serve/gallery/gallery.ts';
import { startServer } from '../http/processes.ts';
import { tempDir } from '../tmp.ts';
import { chromiumPath, skipUnless } from '../requires.ts';

const ROOT = join(import.meta.dirname, '../..');
const BIN = join(ROOT, 'bin/ijepa.js');
const FIXTURES = join(ROOT, 'test/fixtures/fmnist');
const MODEL = join(ROOT, 'models/fmnist-vit-tiny');
const SHOTS = join(ROOT, 'test-artifacts/explorer');
const CHROMIUM = chromiumPath();
const KEY = 'explorer-key';
const skip = skipUnless('browser');

let server: ReturnType<typeof spawn>;
let base = '';
let browser: Browser;
let page: Page;

before(async () => {
  if (skip) return;
  assert.ok(
    existsSync(CHROMIUM),
    `no browser at ${CHROMIUM}: install Debian's chromium (apt-get install chromium) or set CHROMIUM`,
  );
  mkdirSync(SHOTS, { recursive: true });
  const gallery = tempDir('ijepa-explorer-');
  server = spawn(
    process.execPath,
    [
      BIN,
      'serve',
      '--model',
      join(ROOT, 'models/fmnist-vit-tiny'),
      '--port',
      '0',
      '--gallery',
      gallery,
      '--api-key',
      KEY,
    ],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  let log = '';
  server.stderr!.on('data', (d) => (log += d));
  base = await new Promise<string>((resolve, reject) => {
    const t = setInterval(() => {
      const m = /"address":"([\d.]+:\d+)"/.exec(log);
      if (m) {
        clearInterval(t);
        resolve(`http://${m[1]}`);
      }
    }, 20);
    server.once('exit', (code) => reject(new Error(`server exited ${code}: ${log}`)));
  });
  // Two images of each class, labelled, leaving out the query image.
  for (const f of readdirSync(FIXTURES).filter(
    (f) => !f.endsWith('-0.png') && !f.endsWith('-23.png') && !f.endsWith('-35.png'),
  )) {
    const id = f.replace('.png', '');
    const label = id.split('-')[1];
    const r = await fetch(`${base}/v1/gallery?id=${id}&metadata=${encodeURIComponent(JSON.stringify({ label }))}`, {
      method: 'POST',
      headers: { 'content-type': 'image/png', 'x-api-key': KEY },
      body: new Uint8Array(readFileSync(join(FIXTURES, f))),
    });
    assert.equal(r.status, 200, await r.text());
  }
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
  page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${base}/`);
  await page.waitForSelector('body[data-ready="true"]');
  assert.deepEqual(errors, []);
  await page.fill('#key', KEY);
});

after(async () => {
  await browser?.close();
  server?.kill('SIGTERM');
});

const shot = (name: string) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
const status = () => page.locator('#status').textContent();

/** The API's own answer, to hold the page to. */
// biome-ignore lint/suspicious/noExplicitAny: the tests read several response shapes
async function api(path: string, body: Buffer): Promise<any> {
  const r = await fetch(`${base}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'image/png' },
    body: new Uint8Array(body),
  });
  return r.json();
}

/** Clicks (or drags across) patch cells of the query canvas. */
async function select(from: [number, number], to: [number, number] = from): Promise<void> {
  const b = (await page.locator('#query').boundingBox())!;
  const at = ([r, c]: [number, number]) => [b.x + ((c + 0.5) / 8) * b.width, b.y + ((r + 0.5) / 8) * b.height] as const;
  await page.mouse.move(...at(from));
  await page.mouse.down();
  await page.mouse.move(...at(to), { steps: 4 });
  await page.mouse.up();
}

const boot = readFileSync(join(FIXTURES, '9-Ankle_boot-0.png'));

test('the page is served with a strict Content-Security-Policy and nothing from elsewhere', { skip }, async () => {
  const r = await fetch(`${base}/`);
  assert.equal(r.status, 200);
  const csp = r.headers.get('content-security-policy')!;
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /script-src 'self'/);
  assert.doesNotMatch(await r.text(), /https?:\/\//);
  assert.match((await fetch(`${base}/app.js`)).headers.get('content-type')!, /javascript/);
});

test('an uploaded image shows its patch grid and the top class the API gives', { skip }, async () => {
  await page.setInputFiles('#file', join(FIXTURES, '9-Ankle_boot-0.png'));
  await page.waitForFunction(() => document.querySelectorAll('#classes li').length === 5);
  const top = (await api('/v1/classify?top_k=1', boot)).data[0].predictions[0].label;
  assert.equal(top, 'Ankle boot');
  assert.match((await page.locator('#classes li').first().textContent())!, new RegExp(`^${top} — `));
  await shot('1-query');
});

test('selecting a patch finds gallery images with their matching patches outlined where the API says', {
  skip,
}, async () => {
  await select([3, 3]);
  assert.match((await page.locator('#selection').textContent())!, /rows 3–3, columns 3–3/);
  await page.click('#search-box');
  await page.waitForFunction(() => document.querySelectorAll('#hits li').length > 0);
  const api8 = (await api('/v1/search?k=8&pooled=true&box=3,3,4,4', boot)).hits as {
    id: string;
    matches: { gallery: [number, number] }[];
  }[];
  const shown = await page.$$eval('#hits button.hit', (els) =>
    els.map((e) => ({
      id: (e as HTMLElement).dataset.id,
      matches: JSON.parse((e.querySelector('canvas') as HTMLElement).dataset.matches!),
    })),
  );
  assert.deepEqual(
    shown.map((s) => s.id),
    api8.map((h) => h.id),
  );
  assert.deepEqual(
    shown[0].matches,
    api8[0].matches.map((m) => m.gallery),
  );
  // The outline is drawn at that cell: the canvas pixel on its top edge is the outline colour.
  const [r, c] = api8[0].matches[0].gallery;
  const px = await page.$eval(
    '#hits button.hit canvas',
    (el, [r, c]) =>
      Array.from((el as HTMLCanvasElement).getContext('2d')!.getImageData(c * 16 + 8, r * 16 + 1, 1, 1).data),
    [r, c],
  );
  assert.deepEqual(px.slice(0, 3), [255, 212, 0]);
  await page.click('#hits button.hit >> nth=0');
  assert.equal(await page.getAttribute('#hits button.hit >> nth=0', 'aria-pressed'), 'true');
  await shot('2-patch-search');
});

test('hiding a block shows a reconstruction from gallery patches', { skip }, async () => {
  await select([2, 2], [4, 4]);
  await page.click('#hide');
  await page.waitForFunction(() => document.querySelectorAll('#recon figure').length === 3);
  assert.equal(await page.getAttribute('#recon figure >> nth=2', 'data-patches'), '9');
  assert.match((await status())!, /Reconstructed 9 patches/);
  await shot('3-reconstruction');
});

test('adding and deleting a gallery image changes the list', { skip }, async () => {
  const count = async () => Number(/of (\d+)/.exec((await page.locator('#page').textContent())!)?.[1]);
  const before = await count();
  await page.fill('#add-id', 'added-by-page');
  await page.setInputFiles('#add-file', join(FIXTURES, '9-Ankle_boot-23.png'));
  await page.click('#add-form button');
  await page.waitForFunction((n) => document.querySelector('#page')!.textContent!.endsWith(`of ${n}`), before + 1);
  // The newest image is on the last page.
  while (!(await page.isDisabled('#next'))) {
    const shown = await page.locator('#page').textContent();
    await page.click('#next');
    await page.waitForFunction((t) => document.querySelector('#page')!.textContent !== t, shown);
  }
  await page.waitForSelector('#gallery li[data-id="added-by-page"]');
  await shot('4-added');
  await page.click('#gallery li[data-id="added-by-page"] button[aria-label="delete added-by-page"]');
  await page.waitForFunction((n) => document.querySelector('#page')!.textContent!.endsWith(`of ${n}`), before);
  assert.equal((await fetch(`${base}/v1/gallery/added-by-page`)).status, 404);
});

test("an id with a dot segment is refused with the server's reason, and nothing is added", { skip }, async () => {
  const total = async () => (await (await fetch(`${base}/v1/gallery?limit=1`)).json()).total as number;
  const before = await total();
  await page.fill('#add-id', 'a/../b');
  await page.setInputFiles('#add-file', join(FIXTURES, '9-Ankle_boot-23.png'));
  await page.click('#add-form button');
  await page.waitForFunction(() => /empty, '\.' or '\.\.'/.test(document.querySelector('#status')!.textContent!));
  assert.equal(await page.getAttribute('#status', 'class'), 'error');
  assert.equal(await total(), before);
});

test('Delete removes exactly the item shown: an id with an encoded-looking segment, and one with a dot segment', {
  skip,
}, async () => {
  // `ijepa index` names images by their path, which may hold a folder named %2e%2e (a browser
  // reads that unescaped as '..'); a gallery written before dot segments were refused may hold one.
  const images = tempDir('ijepa-explorer-ids-');
  mkdirSync(join(images, 'enc', '%2e%2e'), { recursive: true });
  copyFileSync(join(FIXTURES, '9-Ankle_boot-23.png'), join(images, 'fm3.png'));
  copyFileSync(join(FIXTURES, '9-Ankle_boot-23.png'), join(images, 'enc', '%2e%2e', 'fm3.png'));
  const gallery = tempDir('ijepa-explorer-ids-gallery-');
  const indexed = spawnSync(
    process.execPath,
    [BIN, 'index', '--model', MODEL, '--images', images, '--gallery', gallery],
    {
      encoding: 'utf8',
    },
  );
  assert.equal(indexed.status, 0, indexed.stderr);
  const m = JSON.parse(readFileSync(join(MODEL, 'manifest.json'), 'utf8'));
  const { rows, cols } = m.patches;
  const v = Float32Array.from({ length: rows * cols * m.embeddingDim }, (_, i) => Math.sin(i));
  const g = Gallery.open(gallery, m.id, m.embeddingDim);
  g.add('../gallery/fm3.png', v, v.subarray(0, m.embeddingDim), rows, cols);
  g.close();
  const other = await startServer(MODEL, ['--gallery', gallery, '--api-key', KEY]);
  const p = await browser.newPage();
  try {
    await p.goto(`${other.base}/`);
    await p.waitForSelector('body[data-ready="true"]');
    await p.fill('#key', KEY);
    for (const id of ['enc/%2e%2e/fm3.png', '../gallery/fm3.png']) {
      await p.click(`#gallery li[data-id="${id}"] button[aria-label="delete ${id}"]`);
      await p.waitForSelector(`#gallery li[data-id="${id}"]`, { state: 'detached', timeout: 10_000 });
      assert.equal(await p.locator('#status').textContent(), `Deleted ${id}.`);
    }
    const left = (await (await fetch(`${other.base}/v1/gallery`)).json()).items.map((it: { id: string }) => it.id);
    assert.deepEqual(left, ['fm3.png']);
  } finally {
    await p.close();
    other.child.kill('SIGTERM');
    await other.exited;
  }
});

test("a file that is not an image shows the server's error", { skip }, async () => {
  const bad = join(tempDir('ijepa-explorer-bad-'), 'notes.png');
  writeFileSync(bad, 'these are not pixels');
  // An earlier test may have left an error showing: start from a clear status.
  await page.evaluate(() => {
    const s = document.querySelector('#status')!;
    s.textContent = '';
    s.classList.remove('error');
  });
  await page.setInputFiles('#file', bad);
  await page.waitForFunction(() => document.querySelector('#status')!.classList.contains('error'));
  assert.equal(await status(), 'not a decodable image');
  await shot('5-bad-file');
});

test('at 360 px wide the page stacks into one column and stays usable', { skip }, async () => {
  await page.setViewportSize({ width: 360, height: 800 });
  const query = (await page.locator('#query-panel').boundingBox())!;
  const results = (await page.locator('#results-panel').boundingBox())!;
  assert.ok(query.width <= 360 && results.y >= query.y + query.height, 'panels stack');
  await shot('6-narrow');
  await page.setViewportSize({ width: 1280, height: 1000 });
});
