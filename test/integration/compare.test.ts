/** `ijepa compare` end to end on tiny data: every row, the same labeled subset, resumable, honest about budgets. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { tempDir } from '../tmp.ts';
import { makePackage } from '../http/fixtures.ts';
import { readPackage } from '../../format/package.ts';
import { budgetVerdict, runCompare, type CompareReport } from '../../compare/compare.ts';

const dir = tempDir('ijepa-compare-');

/** Three classes of 16×16 images told apart by colour, 24 each, with seeded noise. */
async function labeledFolders(): Promise<string> {
  const root = join(dir, 'data');
  const tint = [
    [200, 40, 40],
    [40, 200, 40],
    [40, 40, 200],
  ];
  let s = 7;
  const noise = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s / 2 ** 32 - 0.5) * 120;
  };
  for (const [k, name] of ['red', 'green', 'blue'].entries()) {
    mkdirSync(join(root, name), { recursive: true });
    for (let i = 0; i < 24; i++) {
      const px = Buffer.alloc(16 * 16 * 3);
      for (let p = 0; p < 256; p++)
        for (let c = 0; c < 3; c++) px[p * 3 + c] = Math.max(0, Math.min(255, tint[k][c] + noise()));
      await sharp(px, { raw: { width: 16, height: 16, channels: 3 } })
        .png()
        .toFile(join(root, name, `${i}.png`));
    }
  }
  return root;
}

/** A package of the tiny architecture with other weights, recorded as MAE's. */
function maePackage(): string {
  const p = makePackage(false, { seed: 5, id: 'tiny-mae' });
  const path = join(p, 'manifest.json');
  const m = JSON.parse(readFileSync(path, 'utf8'));
  m.training = { ...m.training, objective: 'mae', recipe: 'mae' };
  writeFileSync(path, JSON.stringify(m));
  return p;
}

test('compare: fine-tuned rows (random init, MAE) and frozen rows (linear, attentive) on one labeled subset, saved as Markdown and JSON; a rerun skips finished rows', async () => {
  const data = await labeledFolders();
  const ijepa = makePackage(false, { id: 'tiny-ijepa' });
  const mae = maePackage();
  const out = join(dir, 'out');
  const logged: string[] = [];
  const o = {
    ijepa,
    mae,
    data,
    labeled: 45,
    seed: 3,
    finetuneEpochs: 2,
    attentiveEpochs: 2,
    threads: 1,
    out,
    plain: true,
    log: (s: string) => logged.push(s),
  };
  const { report, markdown } = await runCompare(o);
  assert.deepEqual(
    report.rows.map((r) => [r.method, r.evaluation]),
    [
      ['random init', 'full fine-tune'],
      ['MAE', 'full fine-tune'],
      ['I-JEPA', 'frozen + linear probe'],
      ['I-JEPA', 'frozen + attentive probe'],
      ['MAE', 'frozen + linear probe'],
      ['MAE', 'frozen + attentive probe'],
    ],
  );
  // 72 images: the validation split holds some out, the subset takes 45 of the rest.
  assert.equal(report.labeled, 45);
  assert.ok(report.testCount > 0 && report.testCount < 72 - 45 + 1);
  for (const r of report.rows) {
    assert.ok(r.accuracy >= 0 && r.accuracy <= 1 && r.macroF1 >= 0 && r.macroF1 <= 1, JSON.stringify(r));
    assert.match(
      markdown,
      new RegExp(`\\| ${r.method} \\| ${r.evaluation.replace('+', '\\+')} \\| ${(100 * r.accuracy).toFixed(2)}%`),
    );
  }
  // Colour is all there is to learn: a fine-tune from random init gets most of it in 2 epochs.
  assert.ok(report.rows[0].accuracy > 0.5, `random-init fine-tune ${report.rows[0].accuracy}`);
  const onDisk = JSON.parse(readFileSync(join(out, 'compare.json'), 'utf8')) as CompareReport;
  assert.deepEqual(onDisk.rows, report.rows);
  assert.equal(readFileSync(join(out, 'compare.md'), 'utf8'), markdown);
  assert.match(markdown, /Labeled training images: \*\*45\*\*/);
  assert.match(markdown, /Fine-tuning budget: 2 epochs/);
  // The fine-tuned rows are packages /v1/classify can serve.
  for (const d of ['finetune-random-init', 'finetune-mae']) assert.ok(readPackage(join(out, d)).manifest.files.probe);

  logged.length = 0;
  const again = await runCompare(o);
  assert.deepEqual(again.report.rows, report.rows);
  assert.equal(logged.filter((l) => /done before/.test(l)).length, 6, logged.join('\n'));
  await assert.rejects(runCompare({ ...o, labeled: 40 }), /holds rows made with other arguments/);
  assert.ok(existsSync(join(out, 'frozen-ijepa', 'eval.json')));
});

test('compare: the report says whether the pre-trainings had equal time or equal images, or that they did not', () => {
  const p = (minutes: number, imagesSeen: number, hardware = 'cpu x') => ({
    role: 'r',
    package: 'p',
    id: 'i',
    objective: 'o',
    recipe: 'r',
    steps: 1,
    seed: 0,
    minutes,
    imagesSeen,
    hardware,
  });
  assert.match(budgetVerdict([p(30, 1000), p(29.5, 9000)]), /^equal time/);
  assert.match(budgetVerdict([p(30, 1000), p(29.5, 9000, 'gpu')]), /^UNEQUAL/);
  assert.match(budgetVerdict([p(10, 5000), p(40, 5020)]), /^equal images seen/);
  assert.match(budgetVerdict([p(10, 5000), p(40, 9000)]), /^UNEQUAL: r 10\.0 min, 5000 images/);
});
