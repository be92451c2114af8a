/**
 * docs/cli.md from the command table itself (commander), so the flags, defaults and choices the
 * docs list are the ones the CLI takes. `npm run docs:cli` rewrites it; test/unit/docs.test.ts
 * fails when it is stale.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command, Option } from 'commander';
import { buildCli } from '../cli/index.ts';

export const CLI_REFERENCE = join(import.meta.dirname, '../docs/cli.md');

const cell = (s: string) => s.replaceAll('|', '\\|').replaceAll('\n', ' ');

function optionRow(o: Option): string {
  const notes: string[] = [];
  if (o.mandatory) notes.push('required');
  if (o.argChoices) notes.push(`one of ${o.argChoices.map((c) => `\`${c}\``).join(', ')}`);
  if (o.defaultValue !== undefined && !o.negate && o.defaultValue !== false)
    notes.push(`default \`${Array.isArray(o.defaultValue) ? o.defaultValue.join(' ') : String(o.defaultValue)}\``);
  return `| \`${cell(o.flags)}\` | ${cell(o.description)}${notes.length ? ` (${notes.join('; ')})` : ''} |`;
}

function commandSection(c: Command): string {
  const args = [
    ...c.registeredArguments.map((a) => (a.required ? `<${a.name()}>` : `[${a.name()}]`)),
    ...c.options.filter((o) => o.mandatory).map((o) => o.flags),
  ].join(' ');
  const rows = c.options.filter((o) => !o.hidden).map(optionRow);
  return [
    `## ${c.name()}`,
    '',
    c.description(),
    '',
    '```',
    `npx ijepa ${c.name()}${args ? ` ${args}` : ''} [options]`,
    '```',
    '',
    ...(rows.length ? ['| option | meaning |', '| --- | --- |', ...rows] : ['No options.']),
    '',
  ].join('\n');
}

export function cliReference(): string {
  const commands = buildCli().commands.filter((c) => c.name() !== 'help');
  return [
    '# Command-line reference',
    '',
    'Generated from the command table (`cli/index.ts`) by `npm run docs:cli`; `npx ijepa <command> --help` prints',
    'the same. Every command also takes `-h, --help`.',
    '',
    ...commands.map((c) => `- [${c.name()}](#${c.name()}): ${c.description()}`),
    '',
    ...commands.map(commandSection),
  ].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) writeFileSync(CLI_REFERENCE, cliReference());
