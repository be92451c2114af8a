/**
 * The serving image, built from the working tree on a local base (test/requires.ts: `container`)
 * and run: it answers /readyz for the bundled model, /v1/classify gives what the same model gives
 * outside the image, the server runs as a non-root user, and the trainer is not in it. The image
 * keeps a stable tag so that the next run's build reuses the builder's layer cache.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFileSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import type { Server } from 'node:http';
import { join } from 'node:path';
import { test } from 'node:test';
import { createApp } from '../../serve/app.ts';
import { Service } from '../../serve/service.ts';
import { containerBase, skipUnless } from '../requires.ts';

const ROOT = join(import.meta.dirname, '../..');
const IMAGE = 'ijepa:container-test';
const MODEL = 'models/cifar10-vit-tiny';
/** The host's extra CA (a TLS-intercepting proxy's, say) goes where the Dockerfile's build stage trusts it. */
const CA_IN_CONTEXT = join(ROOT, 'deploy/ca-certificates/container-test-host.pem');

interface Done {
  code: number | null;
  out: string;
  err: string;
}

function docker(args: string[], opts: { input?: string } = {}): Promise<Done> {
  return new Promise((resolve, reject) => {
    const child = spawn('docker', args, { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, out, err }));
    child.stdin.end(opts.input ?? '');
  });
}

async function ok(args: string[]): Promise<string> {
  const r = await docker(args);
  assert.equal(r.code, 0, `docker ${args.join(' ')} failed:\n${(r.out + r.err).slice(-4000)}`);
  return r.out.trim();
}

const imageId = async (ref: string) => {
  const r = await docker(['image', 'inspect', '--format', '{{.Id}}', ref]);
  return r.code === 0 ? r.out.trim() : undefined;
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function classify(base: string, image: Buffer) {
  const res = await fetch(`${base}/v1/classify?top_k=10`, {
    method: 'POST',
    headers: { 'content-type': 'image/jpeg' },
    body: new Uint8Array(image),
  });
  assert.equal(res.status, 200, await res.clone().text());
  const body = (await res.json()) as { data: { predictions: { label: string; probability: number }[] }[] };
  return body.data[0].predictions;
}

/** The bundled model's answer outside the image: the oracle for the one inside it. */
async function classifyOnHost(image: Buffer) {
  const svc = await Service.open(join(ROOT, MODEL));
  const server = await new Promise<Server>((resolve) => {
    const s = createApp(svc).listen(0, '127.0.0.1', () => resolve(s));
  });
  try {
    return await classify(`http://127.0.0.1:${(server.address() as { port: number }).port}`, image);
  } finally {
    await new Promise((r) => server.close(r));
    await svc.close();
  }
}

test('the image builds on a local base, serves the bundled model as a non-root user, and ships no trainer', {
  skip: skipUnless('container'),
  timeout: 20 * 60_000,
}, async (t) => {
  // Both stages keep a tag: what a rebuild leaves untagged is removed, the layers the next build
  // reuses stay.
  const stages = [
    ['--target', 'deps', '-t', `${IMAGE}-deps`],
    ['-t', IMAGE],
  ];
  const previous = await Promise.all([`${IMAGE}-deps`, IMAGE].map(imageId));
  const ca = process.env.NODE_EXTRA_CA_CERTS;
  if (ca) copyFileSync(ca, CA_IN_CONTEXT);
  const t0 = performance.now();
  try {
    for (const stage of stages)
      await ok(['build', '--network', 'host', '--build-arg', `BASE=${containerBase()}`, ...stage, '.']);
  } finally {
    rmSync(CA_IN_CONTEXT, { force: true });
  }
  const built = await Promise.all([`${IMAGE}-deps`, IMAGE].map(imageId));
  assert.ok(built[1]);
  for (const [i, id] of previous.entries()) if (id && id !== built[i]) await docker(['image', 'rm', id]);
  const changed = previous[1] !== built[1];
  const size = Number(await ok(['image', 'inspect', '--format', '{{.Size}}', IMAGE]));
  t.diagnostic(
    `docker build: ${((performance.now() - t0) / 1000).toFixed(1)} s (${changed ? 'new image' : 'unchanged'}); image ${(size / 1e6).toFixed(0)} MB`,
  );

  const config = JSON.parse(await ok(['image', 'inspect', '--format', '{{json .Config}}', IMAGE])) as {
    User: string;
    Cmd: string[];
  };
  assert.equal(config.User, 'node');
  assert.deepEqual(config.Cmd, ['--model', MODEL], 'the bundled model is the default');

  const trainer = await docker(
    ['run', '--rm', '--network', 'none', '--entrypoint', 'node', IMAGE, 'bin/ijepa.js'].concat([
      'train',
      '--data',
      '/nonexistent',
      '--out',
      '/tmp/run',
    ]),
  );
  assert.notEqual(trainer.code, 0);
  assert.match(trainer.err, /this install holds the server only/);

  // Port 0 on the host's network: the server says where it listens.
  const id = await ok([
    'run',
    '-d',
    '--network',
    'host',
    IMAGE,
    '--model',
    MODEL,
    '--host',
    '127.0.0.1',
    '--port',
    '0',
  ]);
  try {
    let base: string | undefined;
    const until = Date.now() + 120_000;
    while (!base) {
      const logs = await docker(['logs', id]);
      const m = /"address":"([\d.]+:\d+)"/.exec(logs.out + logs.err);
      if (m) base = `http://${m[1]}`;
      else {
        const running = await ok(['inspect', '--format', '{{.State.Running}}', id]);
        assert.ok(running === 'true' && Date.now() < until, `the server did not start:\n${logs.out}${logs.err}`);
        await sleep(200);
      }
    }
    let ready: Response;
    for (;;) {
      ready = await fetch(`${base}/readyz`);
      if (ready.status === 200 || Date.now() > until) break;
      await sleep(200);
    }
    assert.equal(ready.status, 200);
    const readiness = (await ready.json()) as { ready: boolean; model: string };
    assert.deepEqual([readiness.ready, readiness.model], [true, 'cifar10-vit-tiny']);

    const fixture = readdirSync(join(ROOT, 'test/fixtures/cifar10')).sort()[0];
    const image = readFileSync(join(ROOT, 'test/fixtures/cifar10', fixture));
    const inside = await classify(base, image);
    const outside = await classifyOnHost(image);
    assert.deepEqual(
      inside.map((p) => p.label),
      outside.map((p) => p.label),
    );
    for (const [i, p] of inside.entries())
      assert.ok(
        Math.abs(p.probability - outside[i].probability) < 1e-4,
        `${p.label}: ${p.probability} inside, ${outside[i].probability} outside`,
      );

    // PID 1 is the server (exec-form ENTRYPOINT); every one of its uids is non-zero.
    const status = await ok(['exec', id, 'cat', '/proc/1/status']);
    const uids = /^Uid:\s+(.*)$/m.exec(status)![1].split(/\s+/).map(Number);
    assert.equal(uids.length, 4);
    assert.ok(
      uids.every((u) => u > 0),
      `PID 1 runs with uids ${uids}`,
    );
    assert.match(await ok(['exec', id, 'cat', '/proc/1/cmdline']), /serve/);
  } catch (e) {
    const logs = await docker(['logs', id]);
    t.diagnostic(`the server's log:\n${(logs.out + logs.err).slice(-4000)}`);
    throw e;
  } finally {
    await docker(['rm', '--force', '--volumes', id]); // with its anonymous volumes (the image's VOLUMEs)
  }
});
