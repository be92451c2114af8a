/**
 * The module map's rules: which folder may import which (dependencies point one way, so folders
 * cannot form a cycle), and which folder alone may load each heavy native or optional package.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { test } from 'node:test';

const ROOT = resolve(import.meta.dirname, '../..');

/** Each folder and the folders it may import (besides itself), lowest layer first. */
const LAYERS: Record<string, string[]> = {
  format: [],
  model: [],
  runtime: ['format'],
  onnx: ['model'],
  serve: ['format', 'runtime'],
  train: ['format', 'model', 'onnx', 'runtime'],
  eval: ['train', 'format', 'model', 'onnx', 'runtime'],
  study: ['eval', 'train', 'format', 'model', 'onnx', 'runtime'],
  finetune: ['eval', 'train', 'format', 'model', 'onnx', 'runtime'],
  compare: ['finetune', 'eval', 'format', 'runtime'],
  cli: ['compare', 'finetune', 'study', 'eval', 'train', 'serve', 'format', 'model', 'onnx', 'runtime'],
};

/** Packages only these path prefixes may import. */
const OWNERS: [RegExp, string[]][] = [
  [/^@tensorflow\//, ['train/tfjs/']],
  [/^onnxruntime-node$/, ['runtime/']],
  [/^hnswlib-node$/, ['serve/gallery/']],
  [/^pg$/, ['serve/gallery/']],
  [/^(express|multer|prom-client|pino)$/, ['serve/']],
];

interface Import {
  file: string;
  spec: string;
  lazy: boolean;
  /** `import type`: erased at run time, but still a dependency between folders. */
  typeOnly: boolean;
}

function sources(dir: string): string[] {
  return readdirSync(join(ROOT, dir), { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts'))
    .map((e) => relative(ROOT, join(e.parentPath, e.name)).split(sep).join('/'));
}

function importsOf(file: string): Import[] {
  const text = readFileSync(join(ROOT, file), 'utf8');
  const out: Import[] = [];
  for (const m of text.matchAll(/^\s*(?:import|export)\s[^'";]*?from\s*'([^']+)'|^\s*import\s*'([^']+)'/gm)) {
    out.push({ file, spec: m[1] ?? m[2], lazy: false, typeOnly: /^\s*(?:import|export)\s+type\s/.test(m[0]) });
  }
  for (const m of text.matchAll(/\bimport\(\s*'([^']+)'\s*\)/g))
    out.push({ file, spec: m[1], lazy: true, typeOnly: false });
  return out;
}

const folderOf = (path: string) => path.split('/')[0];
const all = Object.keys(LAYERS).flatMap(sources).flatMap(importsOf);

test('folders import only the folders below them', () => {
  const bad: string[] = [];
  for (const { file, spec } of all) {
    if (!spec.startsWith('.')) continue;
    const target = relative(ROOT, resolve(dirname(join(ROOT, file)), spec))
      .split(sep)
      .join('/');
    const [from, to] = [folderOf(file), folderOf(target)];
    if (from !== to && !LAYERS[from].includes(to)) bad.push(`${file} → ${target}`);
  }
  assert.deepEqual(bad, []);
});

test('the layer table has no cycle', () => {
  const seen = new Set<string>();
  for (const [folder, deps] of Object.entries(LAYERS)) {
    for (const d of deps) assert.ok(seen.has(d), `${folder} may import ${d}, which is not below it`);
    seen.add(folder);
  }
});

test('heavy and optional packages are loaded by their one owner only', () => {
  const bad: string[] = [];
  for (const { file, spec, typeOnly } of all) {
    if (typeOnly) continue;
    for (const [pkg, owners] of OWNERS)
      if (pkg.test(spec) && !owners.some((o) => file.startsWith(o))) bad.push(`${file} imports ${spec}`);
  }
  assert.deepEqual(bad, []);
});

test('only the training loop reaches the TF.js engine, and lazily (serving installs omit TF.js)', () => {
  const bad = all
    .filter(({ spec, typeOnly }) => !typeOnly && spec.includes('tfjs/'))
    .filter(({ file, lazy }) => !file.startsWith('train/tfjs/') && !(file === 'train/loop.ts' && lazy))
    .map(({ file, spec }) => `${file} → ${spec}`);
  assert.deepEqual(bad, []);
});

test('the rules see every folder of the map', () => {
  assert.ok(all.length > 100, `only ${all.length} imports found`);
  for (const f of Object.keys(LAYERS)) assert.ok(sources(f).length > 0, `${f}/ has no sources`);
});
