/** The package that `npm start` serves is valid and classifies real Fashion-MNIST test images. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { join } from 'node:path';
import { readPackage } from '../../format/package.ts';
import { Service } from '../../serve/service.ts';
import { createApp } from '../../serve/app.ts';

const dir = join(import.meta.dirname, '../../models/fmnist-vit-tiny');
/** Three images per class from the Fashion-MNIST test split (MIT licence), named <label>-<class>-<index>.png. */
const fixtures = join(import.meta.dirname, '../fixtures/fmnist');

test('the bundled model verifies, has a probe head, and POST /v1/classify labels Fashion-MNIST test images sensibly', async () => {
  const pkg = readPackage(dir);
  assert.equal(pkg.manifest.classes?.length, 10);
  assert.ok(pkg.manifest.files.probe);
  const svc = await Service.open(dir);
  assert.ok(svc.ready && svc.probe);
  const server = await new Promise<Server>((resolve) => {
    const s = createApp(svc).listen(0, '127.0.0.1', () => resolve(s));
  });
  const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  try {
    const files = readdirSync(fixtures)
      .filter((f) => f.endsWith('.png'))
      .sort();
    assert.equal(files.length, 30);
    let correct = 0;
    for (const f of files) {
      const res = await fetch(`${base}/v1/classify`, {
        method: 'POST',
        headers: { 'content-type': 'image/png' },
        body: readFileSync(join(fixtures, f)),
      });
      assert.equal(res.status, 200);
      const body = (await res.json()) as { data: { predictions: { label: string; probability: number }[] }[] };
      const top = body.data[0].predictions[0];
      assert.ok(top.probability > 0 && top.probability <= 1);
      if (top.label === svc.probe!.classes[Number(f.split('-')[0])]) correct++;
    }
    // The model's probe scores ~77% on the full test split; 30 images leave room for chance.
    assert.ok(correct >= 18, `${correct}/30 correct`);
  } finally {
    await new Promise((r) => server.close(r));
    await svc.close();
  }
});
