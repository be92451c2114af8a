/**
 * Replicas behind a real balancer: three `ijepa serve` processes on one throwaway PostgreSQL
 * database (test/postgres.ts), HAProxy in front of them on loopback, health-checking /readyz and
 * sending a request that could not reach a server to another, as deploy/haproxy.cfg does. An add
 * acknowledged through the balancer is found through every replica at once; a replica killed
 * mid-load loses no acknowledged add and is routed around; the database restarted mid-load is
 * 503 on the gallery routes meanwhile, embeddings going on, and the same processes serve the
 * gallery again once it is back.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test, type TestContext } from 'node:test';
import { Cluster, freePort, sql } from '../postgres.ts';
import { haproxyPath, skipUnless } from '../requires.ts';
import { tempDir } from '../tmp.ts';
import { makePackage, pattern } from './fixtures.ts';
import { addPng, startServer, type Running } from './processes.ts';

const skip = skipUnless('postgres') || skipUnless('balancer');
const pkg = makePackage(false);
/** Clients sending at once in the mid-load tests: at most this many requests are on a replica when it is killed. */
const CLIENTS = 2;

const children: ChildProcess[] = [];
const killAll = () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
};
process.once('exit', killAll);

interface Fleet {
  db: Cluster;
  url: string;
  replicas: Running[];
  /** The balancer's base URL. */
  lb: string;
  balancerLog(): string;
}

let fleet: Promise<Fleet> | undefined;
after(async () => {
  killAll();
  await (await fleet?.catch(() => undefined))?.db.stop();
});

/**
 * The balancer's configuration: deploy/haproxy.cfg's policy (health checks on /readyz, a request
 * sent again only when it never reached a server, to another one) with a fixed list of servers,
 * round robin (so that a few requests reach every replica), checks ten times a second, and the
 * replica that answered named in a response header.
 */
function haproxyConfig(port: number, replicas: string[]): string {
  return `global
  maxconn 256

defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  timeout check 3s
  retries 3
  retry-on conn-failure
  option redispatch 1

frontend http
  bind 127.0.0.1:${port}
  default_backend replicas

backend replicas
  balance roundrobin
  option httpchk
  http-check send meth GET uri /readyz
  http-check expect status 200
  http-response set-header x-replica %[srv_name]
  default-server check inter 100ms fall 2 rise 2
${replicas.map((base, i) => `  server r${i} ${new URL(base).host}`).join('\n')}
`;
}

/** Waits until `cond` holds, failing after `ms`. */
async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function start(): Promise<Fleet> {
  const db = await Cluster.start();
  const url = await db.database();
  const replicas: Running[] = [];
  // One at a time: the first creates the schema, and three encoders loading at once would only
  // share the same two cores.
  for (let i = 0; i < 3; i++) {
    const r = await startServer(pkg, ['--gallery', url]);
    children.push(r.child);
    replicas.push(r);
  }
  const dir = tempDir('ijepa-haproxy-');
  const port = await freePort();
  writeFileSync(
    join(dir, 'haproxy.cfg'),
    haproxyConfig(
      port,
      replicas.map((r) => r.base),
    ),
  );
  const haproxy = spawn(haproxyPath(), ['-db', '-f', join(dir, 'haproxy.cfg')], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(haproxy);
  let log = '';
  haproxy.stdout!.on('data', (d) => (log += d));
  haproxy.stderr!.on('data', (d) => (log += d));
  const lb = `http://127.0.0.1:${port}`;
  // Ready when the balancer answers and has sent requests to every replica.
  const seen = new Set<string>();
  await until(`the balancer to route to all three replicas (${log})`, async () => {
    if (haproxy.exitCode !== null) throw new Error(`haproxy exited (${haproxy.exitCode}): ${log}`);
    const r = await fetch(`${lb}/readyz`).catch(() => null);
    if (r?.status === 200) seen.add(r.headers.get('x-replica') ?? '');
    return seen.size === 3;
  });
  return { db, url, replicas, lb, balancerLog: () => log };
}

const setup = () => (fleet ??= start());

const search = async (base: string, png: Buffer) =>
  fetch(`${base}/v1/search?k=1`, {
    method: 'POST',
    headers: { 'content-type': 'image/png' },
    body: new Uint8Array(png),
  });

interface Outcome {
  id: string;
  status: number;
  /** ms since the load began, when the request was sent and when its answer came. */
  sent: number;
  answered: number;
  body: string;
}

/**
 * CLIENTS clients sending adds (`prefix<client>-<n>`, small images) through `base` one after
 * another until `stop()`; every answer, or a failed fetch as status 0.
 */
function addLoad(base: string, prefix: string) {
  const t0 = performance.now();
  const outcomes: Outcome[] = [];
  let stopped = false;
  const clients = Array.from({ length: CLIENTS }, async (_, c) => {
    for (let n = 0; !stopped; n++) {
      const id = `${prefix}${c}-${n}`;
      const png = await pattern((c * 50 + n) % 40);
      const sent = performance.now() - t0;
      let status = 0;
      let body = '';
      try {
        const r = await addPng(base, id, png);
        status = r.status;
        body = await r.text();
      } catch (e) {
        body = String((e as Error).cause ?? e);
      }
      outcomes.push({ id, status, sent, answered: performance.now() - t0, body });
    }
  });
  return {
    outcomes,
    now: () => performance.now() - t0,
    acked: () => outcomes.filter((o) => o.status === 200),
    async stop() {
      stopped = true;
      await Promise.all(clients);
    },
  };
}

/** Every image in the database once, with all its patches, and the count every answer reports equal to the rows. */
async function assertOnce(url: string, prefix: string): Promise<number> {
  const rows = await sql<{ id: string; patches: string }>(
    url,
    `SELECT i.id, (SELECT count(*) FROM ijepa_patches AS p WHERE p.image_id = i.id) AS patches FROM ijepa_images AS i WHERE i.id LIKE '${prefix}%'`,
  );
  assert.equal(new Set(rows.map((r) => r.id)).size, rows.length, 'no image twice');
  for (const r of rows) assert.equal(Number(r.patches), 16, `${r.id}: every patch once`);
  const [all] = await sql<{ n: string }>(url, 'SELECT count(*) AS n FROM ijepa_images');
  const [counter] = await sql<{ images: string }>(url, 'SELECT images FROM ijepa_gallery');
  assert.equal(Number(counter.images), Number(all.n), 'the gallery size counts each image once');
  return rows.length;
}

test('adds through the balancer reach every replica, and each is found by a search through every replica as soon as it is acknowledged', {
  skip,
}, async () => {
  const { lb, replicas } = await setup();
  const servedBy = new Set<string>();
  for (let i = 0; i < 6; i++) {
    const r = await addPng(lb, `b${i}`, await pattern(i));
    assert.equal(r.status, 200, await r.text());
    servedBy.add(r.headers.get('x-replica')!);
    // At once, with no wait: each replica answers from the database, not from a copy of its own.
    for (const s of replicas) {
      const found = await (await search(s.base, await pattern(i))).json();
      assert.equal(found.hits[0].id, `b${i}`, `${s.base} finds b${i}`);
      assert.ok(found.hits[0].score > 0.999);
    }
  }
  assert.deepEqual([...servedBy].sort(), ['r0', 'r1', 'r2'], 'the adds were spread over the three replicas');
  for (const s of replicas) assert.equal((await (await fetch(`${s.base}/v1/gallery?limit=1`)).json()).total, 6);
});

test('kill -9 of a replica mid-load: no acknowledged add lost or doubled, only requests on it when it died fail, and the balancer routes around it', {
  skip,
}, async (t: TestContext) => {
  const { lb, url, replicas, balancerLog } = await setup();
  const victim = replicas[1];
  const load = addLoad(lb, 'k');
  await until('10 acknowledged adds', () => load.acked().length >= 10);
  const killedAt = load.now();
  victim.child.kill('SIGKILL');
  await victim.exited;
  const diedAt = load.now();
  const ackedBefore = load.acked().length;
  await until('20 more acknowledged adds', () => load.acked().length >= ackedBefore + 20);
  await load.stop();

  const failed = load.outcomes.filter((o) => o.status !== 200);
  t.diagnostic(
    `${load.outcomes.length} adds, ${failed.length} failed (killed at ${killedAt.toFixed(0)} ms, exited at ${diedAt.toFixed(0)} ms): ${JSON.stringify(failed.map((o) => [o.id, o.status, Math.round(o.sent), Math.round(o.answered), o.body.slice(0, 80)]))}`,
  );
  // A request already on the killed replica cannot be answered (and is not sent again: the
  // balancer re-sends only what never reached a server); every other, sent before or after the
  // kill, succeeds, the balancer skipping the dead server when its connection is refused. The
  // signal takes a moment to land, so "on it" spans from the kill to the process's exit.
  for (const o of failed) {
    assert.ok(
      o.sent <= diedAt && o.answered >= killedAt,
      `only requests in flight at the kill fail: ${JSON.stringify(o)}`,
    );
    assert.ok(o.status === 502 || o.status === 0, JSON.stringify(o));
  }
  assert.ok(failed.length <= CLIENTS, `at most one request per client was on the killed replica (${balancerLog()})`);
  const after = load.outcomes.filter((o) => o.sent > diedAt);
  assert.ok(after.length >= 20 && after.every((o) => o.status === 200), 'every request after the kill succeeded');

  // Every acknowledged add is there, counted through a replica's list route and in the database.
  const acked = load.acked().map((o) => o.id);
  for (const id of acked) assert.equal((await fetch(`${lb}/v1/gallery/${id}`)).status, 200, id);
  const rows = await assertOnce(url, 'k');
  // A failed add may or may not have been committed before its replica died: a client's retry (an
  // upsert of the same id) settles it either way.
  assert.ok(rows >= acked.length && rows <= acked.length + failed.length, `${rows} rows, ${acked.length} acked`);
  const listed = await (await fetch(`${replicas[0].base}/v1/gallery?limit=1`)).json();
  assert.equal(listed.total, 6 + rows);
});

test('the database restarted mid-load: gallery routes answer 503 JSON through the balancer meanwhile, embeddings go on, and the same servers serve the gallery again; no acknowledged add lost', {
  skip,
}, async (t: TestContext) => {
  const { db, lb, url, replicas } = await setup();
  const live = replicas.filter((r) => r.child.exitCode === null && r.child.signalCode === null);
  const pids = live.map((r) => r.child.pid);
  const adds = addLoad(lb, 'd');
  const embeds: { status: number; at: number }[] = [];
  let embedding = true;
  const embedder = (async () => {
    while (embedding) {
      const r = await fetch(`${lb}/v1/embeddings`, {
        method: 'POST',
        headers: { 'content-type': 'image/png' },
        body: new Uint8Array(await pattern(embeds.length % 10)),
      });
      await r.arrayBuffer();
      embeds.push({ status: r.status, at: adds.now() });
    }
  })();
  await until('5 acknowledged adds', () => adds.acked().length >= 5);
  const stoppedAt = adds.now();
  await db.stop();
  const refused = () => adds.outcomes.filter((o) => o.status === 503).length;
  await until('4 refused adds and 3 embeddings while the database is down', () => {
    return refused() >= 4 && embeds.filter((e) => e.at > stoppedAt).length >= 3;
  });
  const down = await (await fetch(`${lb}/readyz`)).json();
  assert.deepEqual(down, { ready: true, model: 'tiny', gallery: 'unavailable' });
  await db.resume();
  const resumedAt = adds.now();
  await until('5 acknowledged adds after the database is back', () => {
    return adds.outcomes.filter((o) => o.status === 200 && o.sent > resumedAt).length >= 5;
  });
  await adds.stop();
  embedding = false;
  await embedder;

  const failed = adds.outcomes.filter((o) => o.status !== 200);
  t.diagnostic(
    `${adds.outcomes.length} adds, ${failed.length} answered 503 while the database was away; ${embeds.length} embeddings, ${embeds.filter((e) => e.status !== 200).length} failed`,
  );
  for (const o of failed) {
    assert.equal(o.status, 503, JSON.stringify(o));
    const body = JSON.parse(o.body);
    assert.equal(body.code, 'gallery_unavailable');
    assert.match(body.error, /the database cannot be reached/);
  }
  assert.ok(
    embeds.every((e) => e.status === 200),
    'embeddings went on',
  );
  // The same processes, each serving the gallery again on its own.
  assert.deepEqual(
    live.map((r) => r.child.pid),
    pids,
  );
  for (const [i, r] of live.entries()) {
    assert.ok(r.child.exitCode === null, 'the server kept running');
    assert.equal((await (await fetch(`${r.base}/readyz`)).json()).gallery, 'ok');
    assert.equal((await addPng(r.base, `x${i}`, await pattern(30 + i))).status, 200);
  }
  for (const o of adds.acked()) assert.equal((await fetch(`${lb}/v1/gallery/${o.id}`)).status, 200, o.id);
  // An add cut off by the shutdown is rolled back, unless its commit was done and only the answer lost.
  const rows = await assertOnce(url, 'd');
  assert.ok(rows >= adds.acked().length && rows <= adds.outcomes.length, `${rows} rows, ${adds.acked().length} acked`);
});
