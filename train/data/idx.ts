/**
 * IDX files (MNIST, Fashion-MNIST), gzipped or not. Debian's dataset-fashion-mnist installs
 * train-/t10k- images and labels under /usr/share/datasets/fashion-mnist/.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import type { Dataset, Split } from './dataset.ts';
import type { ImageSource } from '../../format/preprocess.ts';

export const FASHION_MNIST_CLASSES = [
  'T-shirt/top',
  'Trouser',
  'Pullover',
  'Dress',
  'Coat',
  'Sandal',
  'Shirt',
  'Sneaker',
  'Bag',
  'Ankle boot',
];

export interface IdxArray {
  dims: number[];
  data: Uint8Array;
}

/** Parses an IDX buffer of unsigned bytes (type 0x08), gunzipping when it starts with the gzip magic. */
export function parseIdx(buf: Uint8Array, name = 'IDX file'): IdxArray {
  const raw = buf[0] === 0x1f && buf[1] === 0x8b ? new Uint8Array(gunzipSync(buf)) : buf;
  if (raw.length < 4 || raw[0] !== 0 || raw[1] !== 0) throw new Error(`${name}: not an IDX file (bad magic)`);
  if (raw[2] !== 0x08)
    throw new Error(`${name}: IDX element type 0x${raw[2].toString(16)} is not supported (only unsigned bytes)`);
  const rank = raw[3];
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const dims: number[] = [];
  for (let i = 0; i < rank; i++) dims.push(view.getUint32(4 + 4 * i));
  const start = 4 + 4 * rank;
  const count = dims.reduce((a, b) => a * b, 1);
  if (raw.length < start + count)
    throw new Error(`${name}: truncated: header promises ${count} bytes, file has ${raw.length - start}`);
  return { dims, data: raw.subarray(start, start + count) };
}

function findFile(dir: string, stem: string): string | undefined {
  for (const name of [stem, `${stem}.gz`]) if (existsSync(join(dir, name))) return join(dir, name);
  return undefined;
}

/** True when `path` is an IDX images file or a directory holding MNIST-style IDX files. */
export function looksLikeIdx(path: string): boolean {
  if (statSync(path).isFile()) return /idx\d-ubyte(\.gz)?$/.test(path);
  return !!(findFile(path, 'train-images-idx3-ubyte') || findFile(path, 't10k-images-idx3-ubyte'));
}

export class IdxDataset implements Dataset {
  readonly size: number;
  readonly classes?: string[];
  private readonly images: IdxArray;
  private readonly labels?: Uint8Array;

  constructor(
    readonly imagesPath: string,
    labelsPath?: string,
    classes?: string[],
  ) {
    this.images = parseIdx(readFileSync(imagesPath), imagesPath);
    if (this.images.dims.length !== 3)
      throw new Error(`${imagesPath}: expected [count, rows, cols] images, got dims ${this.images.dims.join('x')}`);
    this.size = this.images.dims[0];
    if (labelsPath) {
      const l = parseIdx(readFileSync(labelsPath), labelsPath);
      if (l.dims[0] !== this.size) throw new Error(`${labelsPath}: ${l.dims[0]} labels for ${this.size} images`);
      this.labels = l.data;
      const max = l.data.reduce((a, b) => Math.max(a, b), 0);
      this.classes = classes && classes.length > max ? classes : Array.from({ length: max + 1 }, (_, i) => String(i));
    }
  }

  /** A directory of MNIST-style files: `train` → train-*, `test` → t10k-*. */
  static fromDir(dir: string, split: Split): IdxDataset {
    const prefix = split === 'test' ? 't10k' : 'train';
    const images = findFile(dir, `${prefix}-images-idx3-ubyte`);
    if (!images) throw new Error(`${dir}: no ${prefix}-images-idx3-ubyte[.gz] for split '${split}'`);
    const labels = findFile(dir, `${prefix}-labels-idx1-ubyte`);
    const classes = /fashion/i.test(dir) ? FASHION_MNIST_CLASSES : undefined;
    return new IdxDataset(images, labels, classes);
  }

  label(i: number): number | undefined {
    return this.labels?.[i];
  }

  async read(i: number): Promise<ImageSource> {
    const [, rows, cols] = this.images.dims;
    const n = rows * cols;
    return { kind: 'raw', data: this.images.data.subarray(i * n, (i + 1) * n), width: cols, height: rows, channels: 1 };
  }

  describe(i: number): string {
    return `${this.imagesPath}#${i}`;
  }
}
