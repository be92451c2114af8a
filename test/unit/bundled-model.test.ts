/** The package that `npm start` serves is valid and answers. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { readPackage } from '../../serve/format/package.ts';
import { Service } from '../../serve/service.ts';

const dir = join(import.meta.dirname, '../../models/fmnist-vit-tiny');

test('the bundled model package verifies, has a probe, and embeds a gray image', async () => {
  const pkg = readPackage(dir);
  assert.equal(pkg.manifest.classes?.length, 10);
  assert.ok(pkg.manifest.files.probe);
  const svc = await Service.open(dir);
  assert.ok(svc.ready && svc.probe);
  await svc.close();
});
