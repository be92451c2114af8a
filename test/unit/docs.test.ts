/**
 * The docs say what the code does: the CLI reference is generated from the command table and
 * current; every `ijepa <command> --flag` written in the README or docs/ is a flag that command
 * takes; the README's CLI table names real commands and flags; what docs/api.md says `npm start`
 * binds is what it binds.
 */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import type { Command } from 'commander';
import { buildCli } from '../../cli/index.ts';
import { CLI_REFERENCE, cliReference } from '../../scripts/cli-reference.ts';

const ROOT = join(import.meta.dirname, '../..');
const read = (p: string) => readFileSync(join(ROOT, p), 'utf8');
const DOCS = [
  'README.md',
  ...readdirSync(join(ROOT, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .map((f) => `docs/${f}`),
];

const commands = new Map<string, Command>(buildCli().commands.map((c) => [c.name(), c]));
const flagsOf = (c: Command) => new Set([...c.options.map((o) => o.long), '--help']);

test('docs/cli.md is the command table as it is (npm run docs:cli rewrites it)', () => {
  assert.ok(readFileSync(CLI_REFERENCE, 'utf8') === cliReference(), 'docs/cli.md is stale: run `npm run docs:cli`');
});

test('every `ijepa <command> --flag` in the README and docs/ is a flag of that command', () => {
  const wrong: string[] = [];
  for (const doc of DOCS)
    for (const line of read(doc).split('\n'))
      for (const m of line.matchAll(/(?<![\w./-])ijepa ([a-z]+)([^`|&;#]*)/g)) {
        const c = commands.get(m[1]);
        if (!c) {
          wrong.push(`${doc}: no command '${m[1]}' in: ${line.trim()}`);
          continue;
        }
        for (const [flag] of m[2].matchAll(/--[a-z][a-z0-9-]*/g))
          if (!flagsOf(c).has(flag)) wrong.push(`${doc}: ${m[1]} has no ${flag}: ${line.trim()}`);
      }
  assert.deepEqual(wrong, []);
});

test("the README's CLI table lists every command, each with flags it takes", () => {
  const rows = read('README.md')
    .split('\n')
    .filter((l) => /^\| `[a-z]+` \|/.test(l))
    .map((l) => l.split(' | '));
  const listed = new Map(rows.map((r) => [r[0].slice(3, -1), r[2]]));
  assert.deepEqual([...listed.keys()].sort(), [...commands.keys()].filter((c) => c !== 'help').sort());
  for (const [name, keyFlags] of listed)
    for (const [flag] of keyFlags.matchAll(/--[a-z][a-z0-9-]*/g))
      assert.ok(flagsOf(commands.get(name)!).has(flag), `README: ${name} has no ${flag}`);
});

test('docs/api.md says where `npm start` listens, and that is where it listens', () => {
  const said = /`npm start` serves the bundled model on `([^`:]+):(\d+)`/.exec(read('docs/api.md'));
  assert.ok(said, 'docs/api.md no longer says where `npm start` listens');
  const start = (JSON.parse(read('package.json')) as { scripts: { start: string } }).scripts.start;
  const host =
    /--host (\S+)/.exec(start)?.[1] ?? commands.get('serve')!.options.find((o) => o.long === '--host')!.defaultValue;
  const port =
    /--port (\d+)/.exec(start)?.[1] ??
    String(commands.get('serve')!.options.find((o) => o.long === '--port')!.defaultValue);
  assert.deepEqual([said[1], said[2]], [host, port]);
});
