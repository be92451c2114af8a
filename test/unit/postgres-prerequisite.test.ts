/** The PostgreSQL prerequisite: missing, the PostgreSQL gallery tests are skipped naming the install script; required, they fail. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { tempDir } from '../tmp.ts';

const ROOT = join(import.meta.dirname, '../..');

/** test/http/gallery-postgres.test.ts with PG_BIN naming a directory without PostgreSQL's binaries. */
function run(require?: string) {
  const env: NodeJS.ProcessEnv = { ...process.env, PG_BIN: tempDir('no-postgres-') };
  delete env.IJEPA_REQUIRE;
  delete env.NODE_TEST_CONTEXT;
  if (require !== undefined) env.IJEPA_REQUIRE = require;
  const r = spawnSync(
    process.execPath,
    ['--import', 'tsx', '--test', '--test-reporter=./test/reporter.mjs', 'test/http/gallery-postgres.test.ts'],
    { cwd: ROOT, env, encoding: 'utf8', timeout: 120_000 },
  );
  return { status: r.status, out: r.stdout + r.stderr };
}

test('without PostgreSQL the PostgreSQL gallery tests are skipped, naming scripts/install-pgvector.sh; IJEPA_REQUIRE=postgres makes them fail', () => {
  const skipped = run();
  assert.equal(skipped.status, 0, skipped.out);
  const count = (what: string) => Number(new RegExp(`# ${what} (\\d+)\\n`).exec(skipped.out)?.[1]);
  assert.ok(count('tests') > 0 && count('skipped') === count('tests'), skipped.out);
  assert.match(
    skipped.out,
    /test\/http\/gallery-postgres\.test\.ts: no PostgreSQL server binaries \(initdb, postgres, pg_config\); install: scripts\/install-pgvector\.sh/,
  );
  const failed = run('postgres');
  assert.notEqual(failed.status, 0, failed.out);
  assert.match(failed.out, /# skipped 0\n/);
});
