/**
 * node:test's own reporter (spec on a terminal, TAP otherwise), with the skipped tests and their
 * reasons listed once, just before the run's totals, so a missing prerequisite is not lost among
 * the passes. Plain JavaScript: node loads reporters before `--import tsx` applies.
 */
import { relative } from 'node:path';
import { Readable } from 'node:stream';
import { spec, tap } from 'node:test/reporters';

async function* withSkipSummary(source) {
  const byReason = new Map();
  let listed = false;
  for await (const e of source) {
    if (e.type === 'test:pass' && e.data.skip) {
      const reason = typeof e.data.skip === 'string' ? e.data.skip : 'no reason given';
      const where = e.data.file ? relative(process.cwd(), e.data.file) : '?';
      if (!byReason.has(reason)) byReason.set(reason, new Set());
      byReason.get(reason).add(where);
    }
    const totals = e.type === 'test:diagnostic' && e.data.file === undefined && /^tests \d+$/.test(e.data.message);
    if (totals && !listed && byReason.size > 0) {
      listed = true;
      const say = (message) => ({ type: 'test:diagnostic', data: { message, nesting: 0 } });
      yield say('skipped, with the reason:');
      for (const [reason, files] of byReason) yield say(`  ${[...files].join(', ')}: ${reason}`);
    }
    yield e;
  }
}

export default async function* reporter(source) {
  const events = withSkipSummary(source);
  if (process.stdout.isTTY) yield* Readable.from(events).pipe(new spec());
  else yield* tap(events);
}
