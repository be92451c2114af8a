/** The linear probe's objective (onnxruntime, autodiff'd) against a direct JS evaluation, and a fit. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fitLogReg, ortObjective } from '../../eval/logreg.ts';
import { randomArray } from '../helpers.ts';

/** Mean cross-entropy + (l2/2)‖W‖² and its gradient, written out by hand. */
function reference(theta: Float64Array, x: Float32Array, y: Int32Array, n: number, d: number, c: number, l2: number) {
  const grad = new Float64Array(theta.length);
  let loss = 0;
  for (let i = 0; i < n; i++) {
    const logits = Array.from({ length: c }, (_, k) => {
      let s = theta[c * d + k];
      for (let j = 0; j < d; j++) s += theta[k * d + j] * x[i * d + j];
      return s;
    });
    const max = Math.max(...logits);
    const logZ = max + Math.log(logits.reduce((a, v) => a + Math.exp(v - max), 0));
    loss += logZ - logits[y[i]];
    for (let k = 0; k < c; k++) {
      const g = (Math.exp(logits[k] - logZ) - (k === y[i] ? 1 : 0)) / n;
      for (let j = 0; j < d; j++) grad[k * d + j] += g * x[i * d + j];
      grad[c * d + k] += g;
    }
  }
  let reg = 0;
  for (let i = 0; i < c * d; i++) {
    grad[i] += l2 * theta[i];
    reg += theta[i] ** 2;
  }
  return { loss: loss / n + 0.5 * l2 * reg, grad };
}

test('logistic-regression objective: onnxruntime loss and gradient equal the hand-written ones', async () => {
  const [n, d, c, l2] = [37, 6, 4, 0.01];
  const x = randomArray(n * d, 3, 2);
  const y = Int32Array.from({ length: n }, (_, i) => (i * 7) % c);
  const theta = Float64Array.from(randomArray(c * d + c, 5, 0.8));
  const { f, release } = await ortObjective(x, y, n, d, c, l2);
  const grad = new Float64Array(theta.length);
  const loss = await f(theta, grad);
  await release();
  const ref = reference(theta, x, y, n, d, c, l2);
  assert.ok(Math.abs(loss - ref.loss) < 1e-5 * Math.max(1, ref.loss), `${loss} vs ${ref.loss}`);
  const scale = Math.max(...ref.grad.map(Math.abs));
  ref.grad.forEach((g, i) => assert.ok(Math.abs(grad[i] - g) <= 1e-4 * scale, `grad[${i}] ${grad[i]} vs ${g}`));
});

test('fitLogReg separates separable classes and is deterministic', async () => {
  const [n, d, c] = [120, 5, 3];
  const x = randomArray(n * d, 9, 0.3);
  const y = Int32Array.from({ length: n }, (_, i) => i % c);
  for (let i = 0; i < n; i++) x[i * d + y[i]] += 2;
  const a = await fitLogReg(x, y, n, d, c, { l2: 1e-3, maxIter: 200, tol: 1e-5 });
  const b = await fitLogReg(x, y, n, d, c, { l2: 1e-3, maxIter: 200, tol: 1e-5 });
  assert.deepEqual(a.weights, b.weights);
  let correct = 0;
  for (let i = 0; i < n; i++) {
    const scores = Array.from(
      { length: c },
      (_, k) =>
        a.bias[k] + Array.from({ length: d }, (_, j) => a.weights[k * d + j] * x[i * d + j]).reduce((s, v) => s + v, 0),
    );
    if (scores.indexOf(Math.max(...scores)) === y[i]) correct++;
  }
  assert.equal(correct, n);
});
