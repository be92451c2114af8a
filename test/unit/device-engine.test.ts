/**
 * The device engine's graphs (step with gradient accumulation, AdamW + EMA update, EMA gap) run on
 * the CPU provider here, so they are checked on every machine against the host engine, whose
 * update is the JS AdamW and EMA. test/gpu runs the same engine on WebGPU.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { tinyModel } from '../helpers.ts';
import { engineOptions as opts, initialState, maxAbsDiff, runSteps } from '../steps.ts';
import { OrtEngine } from '../../train/ort/engine.ts';
import { DeviceEngine } from '../../train/ort/device.ts';

const m = tinyModel;

test('device-resident AdamW + EMA (as graphs) = the host engine (JS) over 3 steps with accumulation and chunks', async () => {
  const host = initialState(m);
  const dev = initialState(m);
  const a = await OrtEngine.create(m, host.online, host.target, opts);
  const b = await DeviceEngine.create(m, dev.online, dev.target, dev.adam, {
    ...opts,
    device: 'cpu',
  });
  const la = await runSteps(a, host.adam, m, 3, 2);
  const lb = await runSteps(b, dev.adam, m, 3, 2);
  for (let i = 0; i < 3; i++) assert.ok(Math.abs(la[i] - lb[i]) <= 1e-5 * la[i], `loss ${la[i]} vs ${lb[i]}`);
  assert.ok(maxAbsDiff(dev.online.data, host.online.data) <= 1e-5, 'online weights');
  assert.ok(maxAbsDiff(dev.target.data, host.target.data) <= 1e-5, 'EMA target');
  assert.ok(maxAbsDiff(dev.adam.m, host.adam.m) <= 1e-6, 'first moments');
  assert.ok(maxAbsDiff(dev.adam.v, host.adam.v) <= 1e-6, 'second moments');
  assert.equal(dev.adam.t, 3);
  // The weights moved (the comparison is not of two untouched copies), and the EMA gap agrees.
  assert.ok(maxAbsDiff(dev.online.data, initialState(m).online.data) > 1e-3);
  assert.ok(Math.abs((await b.emaGap()) - a.emaGap()) <= 1e-6);
  await Promise.all([a.dispose(), b.dispose()]);
});
