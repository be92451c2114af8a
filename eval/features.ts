/**
 * A feature file: features of n labeled images, written by any program (a PyTorch run, another
 * encoder) so `ijepa score` can score them with `ijepa eval`'s probes. Three files share
 * a prefix:
 *
 * - `<prefix>.json`: `{"n": <images>, "dim": <values per image>, "classes": <count, or the class names>}`
 * - `<prefix>.x.f32`: n·dim float32, little-endian, row-major (image i is values [i·dim, (i+1)·dim))
 * - `<prefix>.y.i32`: n int32, little-endian, each image's class in [0, classes)
 *
 * numpy: `x.astype('<f4').tofile(prefix + '.x.f32'); y.astype('<i4').tofile(prefix + '.y.i32')`.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { z } from 'zod';
import type { Features } from './probe.ts';

const headerSchema = z.object({
  n: z.number().int().positive(),
  dim: z.number().int().positive(),
  classes: z.union([z.number().int().min(2), z.array(z.string()).min(2)]),
});

export interface FeatureFile extends Features {
  dim: number;
  /** Number of classes. */
  classes: number;
  /** Class names, when the header gives them. */
  names?: string[];
}

export class FeatureFileError extends Error {}

function bytes(path: string, expected: number): Uint8Array {
  let b: Buffer;
  try {
    b = readFileSync(path);
  } catch (e) {
    throw new FeatureFileError(`cannot read ${path}: ${(e as Error).message}`);
  }
  if (b.length !== expected) throw new FeatureFileError(`${path} has ${b.length} bytes, the header says ${expected}`);
  // A copy aligned for the typed-array view (a Buffer may sit at any offset of a shared pool).
  return new Uint8Array(b);
}

/** Little-endian on every platform this runs on; a big-endian host would need a byte swap. */
export function readFeatureFile(prefix: string): FeatureFile {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(`${prefix}.json`, 'utf8'));
  } catch (e) {
    throw new FeatureFileError(`cannot read ${prefix}.json: ${(e as Error).message}`);
  }
  const parsed = headerSchema.safeParse(raw);
  if (!parsed.success) throw new FeatureFileError(`${prefix}.json: ${parsed.error.issues[0].message}`);
  const { n, dim } = parsed.data;
  const names = Array.isArray(parsed.data.classes) ? parsed.data.classes : undefined;
  const classes = names?.length ?? (parsed.data.classes as number);
  const x = new Float32Array(bytes(`${prefix}.x.f32`, n * dim * 4).buffer);
  const y = new Int32Array(bytes(`${prefix}.y.i32`, n * 4).buffer);
  const bad = y.findIndex((v) => v < 0 || v >= classes);
  if (bad >= 0)
    throw new FeatureFileError(`${prefix}.y.i32: label ${y[bad]} of image ${bad} is not in [0, ${classes})`);
  if (!x.every(Number.isFinite)) throw new FeatureFileError(`${prefix}.x.f32 holds a value that is not finite`);
  return { x, y, n, skipped: 0, dim, classes, ...(names ? { names } : {}) };
}

export function writeFeatureFile(
  prefix: string,
  f: { x: Float32Array; y: Int32Array; n: number },
  dim: number,
  classes: number | string[],
): void {
  writeFileSync(`${prefix}.json`, `${JSON.stringify({ n: f.n, dim, classes })}\n`);
  writeFileSync(`${prefix}.x.f32`, new Uint8Array(f.x.buffer, f.x.byteOffset, f.n * dim * 4));
  writeFileSync(`${prefix}.y.i32`, new Uint8Array(f.y.buffer, f.y.byteOffset, f.n * 4));
}
