/** Reading and writing model packages: manifest validation and file checksums. */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { manifestSchema, type Manifest, type PackageFile } from './manifest.ts';

export const MANIFEST = 'manifest.json';

export function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

export function describeFile(path: string, bytes: Uint8Array): PackageFile {
  return { path, sha256: sha256(bytes), bytes: bytes.length };
}

export function contentHash(files: Manifest['files']): string {
  const h = createHash('sha256');
  for (const f of Object.values(files)
    .filter(Boolean)
    .sort((a, b) => a!.path.localeCompare(b!.path)))
    h.update(`${f!.path}:${f!.sha256}\n`);
  return h.digest('hex');
}

export class PackageError extends Error {}

/** Reads and validates a package: the manifest's schema, then every listed file's size and hash. */
export function readPackage(dir: string): { manifest: Manifest; file(name: keyof Manifest['files']): Uint8Array } {
  const mpath = join(dir, MANIFEST);
  if (!existsSync(mpath)) throw new PackageError(`${dir}: no ${MANIFEST} (not a model package)`);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(mpath, 'utf8'));
  } catch (e) {
    throw new PackageError(`${mpath}: ${(e as Error).message}`);
  }
  const parsed = manifestSchema.safeParse(raw);
  if (!parsed.success)
    throw new PackageError(
      `${mpath}: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
    );
  const manifest = parsed.data;
  const cache = new Map<string, Uint8Array>();
  for (const [key, f] of Object.entries(manifest.files)) {
    if (!f) continue;
    const p = join(dir, f.path);
    if (!existsSync(p)) throw new PackageError(`${dir}: ${key} file ${f.path} is missing`);
    const bytes = readFileSync(p);
    if (bytes.length !== f.bytes || sha256(bytes) !== f.sha256)
      throw new PackageError(`${dir}: ${f.path} does not match its checksum in ${MANIFEST} (corrupt or modified)`);
    cache.set(key, bytes);
  }
  if (contentHash(manifest.files) !== manifest.contentHash)
    throw new PackageError(`${mpath}: contentHash does not match the files`);
  return {
    manifest,
    file(name) {
      const b = cache.get(name);
      if (!b) throw new PackageError(`${dir}: the package has no ${name} file`);
      return b;
    },
  };
}

/**
 * Writes a package into a sibling temporary directory, then swaps it in, so readers never see a
 * half-written package.
 */
export function writePackage(dir: string, manifest: Manifest, files: Record<string, Uint8Array>): void {
  const parsed = manifestSchema.parse(manifest);
  const tmp = join(dirname(dir), `.${basename(dir)}.tmp-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  for (const [name, bytes] of Object.entries(files)) writeFileSync(join(tmp, name), bytes);
  writeFileSync(join(tmp, MANIFEST), `${JSON.stringify(parsed, null, 2)}\n`);
  const old = `${tmp}.old`;
  if (existsSync(dir)) renameSync(dir, old);
  renameSync(tmp, dir);
  rmSync(old, { recursive: true, force: true });
}
