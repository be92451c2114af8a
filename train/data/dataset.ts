/** A labeled or unlabeled image collection with random access by index. */
import type { ImageSource } from '../../serve/format/preprocess.ts';

export interface Dataset {
  readonly size: number;
  /** Class names when the data is labeled. */
  readonly classes?: string[];
  /** Label index of item i, when labeled. */
  label(i: number): number | undefined;
  read(i: number): Promise<ImageSource>;
  /** Where the item comes from, for warnings. */
  describe(i: number): string;
  close?(): Promise<void>;
}

export type Split = 'train' | 'test' | 'unlabeled';
