/** The bundled packages verify and classify real images they never trained on. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { join } from 'node:path';
import { readPackage } from '../../format/package.ts';
import { Service } from '../../serve/service.ts';
import { createApp } from '../../serve/app.ts';

const models = join(import.meta.dirname, '../../models');
const fixturesDir = join(import.meta.dirname, '../fixtures');

const bundled = [
  {
    // `npm start`'s model; its head scores 44.9% on the whole validation split, 11 of these 30.
    name: 'cifar10-vit-tiny',
    what: 'CIFAR-10 validation images',
    /** Three images per class from the validation split pre-training held out, <label>-<class>-<file>.jpg. */
    fixtures: 'cifar10',
    type: 'image/jpeg',
    atLeast: 9,
  },
  {
    // Its head scores 86.3% on the full test split.
    name: 'fmnist-vit-tiny',
    what: 'Fashion-MNIST test images',
    /** Three images per class from the Fashion-MNIST test split (MIT licence), <label>-<class>-<index>.png. */
    fixtures: 'fmnist',
    type: 'image/png',
    atLeast: 18,
  },
];

for (const b of bundled) {
  test(`the bundled model ${b.name} verifies, has a probe head, and POST /v1/classify labels ${b.what} sensibly`, async () => {
    const dir = join(models, b.name);
    const fixtures = join(fixturesDir, b.fixtures);
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
      const files = readdirSync(fixtures).sort();
      assert.equal(files.length, 30);
      let correct = 0;
      for (const f of files) {
        const res = await fetch(`${base}/v1/classify`, {
          method: 'POST',
          headers: { 'content-type': b.type },
          body: readFileSync(join(fixtures, f)),
        });
        assert.equal(res.status, 200);
        const body = (await res.json()) as { data: { predictions: { label: string; probability: number }[] }[] };
        const top = body.data[0].predictions[0];
        assert.ok(top.probability > 0 && top.probability <= 1);
        if (top.label === svc.probe!.classes[Number(f.split('-')[0])]) correct++;
      }
      // 30 images leave room for chance (a tenth of them by guessing).
      assert.ok(correct >= b.atLeast, `${correct}/30 correct`);
    } finally {
      await new Promise((r) => server.close(r));
      await svc.close();
    }
  });
}
