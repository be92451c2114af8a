/**
 * A folder of image files (any format sharp decodes). When every image sits in a first-level
 * sub-folder, the sub-folder names are the classes; otherwise the data is unlabeled.
 */
import { readFile } from 'node:fs/promises';
import { relative, sep } from 'node:path';
import { listImages } from '../../runtime/folder.ts';
import type { Dataset } from './dataset.ts';
import type { ImageSource } from '../../format/preprocess.ts';

export class FolderDataset implements Dataset {
  readonly files: string[];
  readonly classes?: string[];
  private readonly labels?: Int32Array;

  constructor(readonly root: string) {
    const files = listImages(root);
    this.files = files;
    const parts = files.map((f) => relative(root, f).split(sep));
    if (parts.every((p) => p.length >= 2)) {
      this.classes = [...new Set(parts.map((p) => p[0]))].sort();
      const index = new Map(this.classes.map((c, i) => [c, i]));
      this.labels = Int32Array.from(parts, (p) => index.get(p[0])!);
    }
  }

  get size(): number {
    return this.files.length;
  }

  label(i: number): number | undefined {
    return this.labels?.[i];
  }

  async read(i: number): Promise<ImageSource> {
    return { kind: 'encoded', data: await readFile(this.files[i]) };
  }

  describe(i: number): string {
    return this.files[i];
  }
}
