/**
 * Optional prerequisites: missing, their tests are skipped with the reason and the install
 * command, listed once before the totals; named in IJEPA_REQUIRE (as CI does), they fail the run.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { required } from '../requires.ts';
import { tempDir } from '../tmp.ts';

const ROOT = join(import.meta.dirname, '../..');

/**
 * A test file run as `npm test` runs it, with `env` hiding its prerequisite and IJEPA_REQUIRE
 * set to `require` (or unset).
 */
function runWithout(file: string, env: NodeJS.ProcessEnv, require?: string) {
  const e: NodeJS.ProcessEnv = { ...process.env, ...env };
  delete e.IJEPA_REQUIRE;
  delete e.NODE_TEST_CONTEXT;
  if (require !== undefined) e.IJEPA_REQUIRE = require;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-reporter=./test/reporter.mjs', file], {
    cwd: ROOT,
    env: e,
    encoding: 'utf8',
    timeout: 120_000,
  });
  return { status: r.status, out: r.stdout + r.stderr };
}

/** The browser tests with no Chromium where they look for it. */
const browserTests = (require?: string) =>
  runWithout('test/browser/explorer.test.ts', { CHROMIUM: join(ROOT, 'no-such-chromium') }, require);

/** Skipped without it, naming `reason`; failing where IJEPA_REQUIRE names `name`. */
function skipsThenFails(file: string, env: NodeJS.ProcessEnv, name: string, reason: RegExp) {
  const skipped = runWithout(file, env);
  assert.equal(skipped.status, 0, skipped.out);
  const count = (what: string) => Number(new RegExp(`# ${what} (\\d+)\\n`).exec(skipped.out)?.[1]);
  assert.ok(count('tests') > 0 && count('skipped') === count('tests'), skipped.out);
  assert.match(skipped.out, reason);
  const failed = runWithout(file, env, name);
  assert.notEqual(failed.status, 0, failed.out);
  assert.match(failed.out, /# skipped 0\n/);
}

test('a missing prerequisite skips its tests, saying why and how to install it, once before the totals', () => {
  const { status, out } = browserTests();
  assert.equal(status, 0, out);
  const count = (what: string) => Number(new RegExp(`# ${what} (\\d+)\\n`).exec(out)?.[1]);
  assert.ok(count('tests') > 0 && count('skipped') === count('tests'), 'every browser test skipped');
  assert.match(
    out,
    /# skipped, with the reason:\n#\s+test\/browser\/explorer\.test\.ts: no browser at .*no-such-chromium; install: apt-get install chromium/,
  );
  assert.ok(out.indexOf('with the reason') < out.indexOf('# tests '), 'the reasons come before the totals');
});

test('IJEPA_REQUIRE turns the skip into a failure', () => {
  for (const require of ['browser', 'all', 'webgpu, browser']) {
    const { status, out } = browserTests(require);
    assert.notEqual(status, 0, `IJEPA_REQUIRE=${require} passed:\n${out}`);
    assert.match(out, /no browser at .*no-such-chromium/);
    assert.match(out, /# skipped 0\n/);
  }
});

test('IJEPA_REQUIRE refuses a name it does not know, so a typo cannot turn failures back into skips', () => {
  assert.deepEqual([...required('webgpu,browser')], ['webgpu', 'browser']);
  assert.deepEqual([...required('')], []);
  assert.throws(() => required('webgpu,browsr'), /IJEPA_REQUIRE names 'browsr'; known: webgpu, browser(, \w+)*, all/);
});

test('without a docker client the container test is skipped, naming the commands that set one up; required, it fails', () => {
  // An empty PATH: no docker client on it (node is started by its full path).
  skipsThenFails(
    'test/container/image.test.ts',
    { PATH: tempDir('no-docker-') },
    'container',
    /test\/container\/image\.test\.ts: no docker client .*; install: apt-get install docker\.io mmdebstrap, then scripts\/start-dockerd\.sh and scripts\/container-base\.sh/,
  );
});

test('without PostgreSQL the PostgreSQL gallery tests are skipped, naming scripts/install-pgvector.sh; required, they fail', () => {
  skipsThenFails(
    'test/http/gallery-postgres.test.ts',
    { PG_BIN: tempDir('no-postgres-') },
    'postgres',
    /test\/http\/gallery-postgres\.test\.ts: no PostgreSQL server binaries \(initdb, postgres, pg_config\); install: scripts\/install-pgvector\.sh/,
  );
});
