/**
 * STL-10 binary format: `<split>_X.bin` holds 96×96×3 uint8 images, each stored channel by channel
 * in column-major order; `<split>_y.bin` holds 1-based labels. The unlabeled split is 5 GB, so
 * images are read from disk on demand.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Dataset, Split } from './dataset.ts';
import type { ImageSource } from '../../format/preprocess.ts';

export const STL10_SIZE = 96;
const IMAGE_BYTES = STL10_SIZE * STL10_SIZE * 3;
export const STL10_CLASSES = ['airplane', 'bird', 'car', 'cat', 'deer', 'dog', 'horse', 'monkey', 'ship', 'truck'];

export function looksLikeStl10(dir: string): boolean {
  return (
    statSync(dir).isDirectory() &&
    ['unlabeled_X.bin', 'train_X.bin', 'test_X.bin'].some((f) => existsSync(join(dir, f)))
  );
}

/** Column-major planar (channel, col, row) → row-major interleaved HWC. */
export function stl10ToHwc(src: Uint8Array): Uint8Array {
  const s = STL10_SIZE;
  const out = new Uint8Array(IMAGE_BYTES);
  for (let c = 0; c < 3; c++)
    for (let x = 0; x < s; x++) for (let y = 0; y < s; y++) out[(y * s + x) * 3 + c] = src[c * s * s + x * s + y];
  return out;
}

export class Stl10Dataset implements Dataset {
  readonly size: number;
  readonly classes?: string[];
  private readonly labels?: Uint8Array;
  private handle?: Promise<FileHandle>;
  private readonly file: string;

  constructor(
    dir: string,
    readonly split: Split,
  ) {
    this.file = join(dir, `${split}_X.bin`);
    if (!existsSync(this.file)) throw new Error(`${dir}: no ${split}_X.bin (STL-10 binary)`);
    const bytes = statSync(this.file).size;
    if (bytes % IMAGE_BYTES !== 0)
      throw new Error(`${this.file}: ${bytes} bytes is not a whole number of 96x96x3 images`);
    this.size = bytes / IMAGE_BYTES;
    const labelFile = join(dir, `${split}_y.bin`);
    if (split !== 'unlabeled' && existsSync(labelFile)) {
      const y = readFileSync(labelFile);
      if (y.length !== this.size) throw new Error(`${labelFile}: ${y.length} labels for ${this.size} images`);
      this.labels = new Uint8Array(y.length);
      for (let i = 0; i < y.length; i++) {
        if (y[i] < 1 || y[i] > 10) throw new Error(`${labelFile}: label ${y[i]} at ${i} is outside 1..10`);
        this.labels[i] = y[i] - 1;
      }
      this.classes = STL10_CLASSES;
    }
  }

  /** Default training split: unlabeled when present (the reference pre-trains on it), else train. */
  static forTraining(dir: string): Stl10Dataset {
    return new Stl10Dataset(dir, existsSync(join(dir, 'unlabeled_X.bin')) ? 'unlabeled' : 'train');
  }

  label(i: number): number | undefined {
    return this.labels?.[i];
  }

  async read(i: number): Promise<ImageSource> {
    this.handle ??= open(this.file, 'r');
    const buf = new Uint8Array(IMAGE_BYTES);
    const { bytesRead } = await (await this.handle).read(buf, 0, IMAGE_BYTES, i * IMAGE_BYTES);
    if (bytesRead !== IMAGE_BYTES) throw new Error(`${this.file}: short read at image ${i}`);
    return { kind: 'raw', data: stl10ToHwc(buf), width: STL10_SIZE, height: STL10_SIZE, channels: 3 };
  }

  describe(i: number): string {
    return `${this.file}#${i}`;
  }

  async close(): Promise<void> {
    if (this.handle) await (await this.handle).close();
    this.handle = undefined;
  }
}
