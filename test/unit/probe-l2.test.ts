/** The probe's L2 penalty chosen on the probe's own training images (`--l2 auto`). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fitAndScore, L2_GRID, type Features } from '../../eval/probe.ts';
import { Rng } from '../../model/rng.ts';

/**
 * Two classes that differ along one of k latent factors, seen through d ≫ k correlated features
 * plus a little noise (like neighbouring patches of a grid readout): with n < d a weak penalty
 * fits the labels with large weights on the noise.
 */
function correlated(n: number, d: number, seed: number, k = 10): Features {
  const mix = Rng.for(0, 'mixing');
  const m = Float32Array.from({ length: d * k }, () => mix.normal());
  const rng = Rng.for(seed, 'latent');
  const x = new Float32Array(n * d);
  const y = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    y[i] = i % 2;
    const z = Array.from({ length: k }, (_, f) => rng.normal() + (f === 0 ? (y[i] ? 0.6 : -0.6) : 0));
    for (let j = 0; j < d; j++) {
      let v = 0.3 * rng.normal();
      for (let f = 0; f < k; f++) v += m[j * k + f] * z[f];
      x[i * d + j] = v;
    }
  }
  return { x, y, n, skipped: 0 };
}

test('auto picks the penalty that held-out training images score best, and beats a weak fixed one where n < d', async () => {
  const d = 400;
  const tr = correlated(200, d, 1);
  const te = correlated(1000, d, 2);
  const auto = await fitAndScore(tr, te, d, 2, 'auto', 300);
  const weak = await fitAndScore(tr, te, d, 2, 1e-4, 300);
  assert.deepEqual(
    auto.selection!.map((s) => s.l2),
    L2_GRID,
  );
  const best = Math.max(...auto.selection!.map((s) => s.accuracy));
  assert.equal(auto.l2, auto.selection!.find((s) => s.accuracy === best)!.l2, 'the first (strongest) of the best');
  assert.ok(auto.l2 >= 1e-2, `a strong penalty for ${tr.n} images of ${d} values, got ${auto.l2}`);
  assert.ok(
    auto.report.accuracy > weak.report.accuracy + 0.03,
    `auto ${auto.report.accuracy} vs 1e-4 ${weak.report.accuracy}`,
  );
});

test('auto never reads the scored split', async () => {
  const d = 400;
  const tr = correlated(200, d, 1);
  const te = correlated(300, d, 2);
  const flipped = { ...te, y: te.y.map((v) => 1 - v) };
  const a = await fitAndScore(tr, te, d, 2, 'auto', 300);
  const b = await fitAndScore(tr, flipped, d, 2, 'auto', 300);
  assert.equal(a.l2, b.l2);
  assert.deepEqual(a.selection, b.selection);
  assert.ok(
    Math.abs(a.report.accuracy + b.report.accuracy - 1) < 1e-9,
    'the same predictions, scored against flipped labels',
  );
});
