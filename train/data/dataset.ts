/** A labeled or unlabeled image collection with random access by index. */
import type { ImageSource } from '../../format/preprocess.ts';

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

/** The items of `ds` at `items`, re-indexed from 0 (e.g. the training part of a validation split). */
export function subset(ds: Dataset, items: ArrayLike<number>): Dataset {
  return {
    size: items.length,
    classes: ds.classes,
    label: (i) => ds.label(items[i]),
    read: (i) => ds.read(items[i]),
    describe: (i) => ds.describe(items[i]),
    close: ds.close ? () => ds.close!() : undefined,
  };
}
