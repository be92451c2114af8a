/** Temporary directories for tests, removed when the test process exits. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const made: string[] = [];
process.once('exit', () => {
  for (const d of made) {
    // A browser the test closed can still be writing its profile here (ENOTEMPTY): retry, and a
    // directory left behind is reported, not turned into the failure of tests that passed.
    try {
      rmSync(d, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
    } catch (e) {
      process.stderr.write(`could not remove ${d}: ${(e as Error).message}\n`);
    }
  }
});

export function tempDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  made.push(d);
  return d;
}
