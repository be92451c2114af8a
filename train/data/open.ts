/** Picks the loader for a data path: STL-10 binary directory, IDX file/directory, or image folder. */
import { existsSync, statSync } from 'node:fs';
import type { Dataset, Split } from './dataset.ts';
import { FolderDataset } from './folder.ts';
import { IdxDataset, looksLikeIdx } from './idx.ts';
import { Stl10Dataset, looksLikeStl10 } from './stl10.ts';

/** `split` picks the part of a multi-split source; `undefined` means "for pre-training". */
export function openDataset(path: string, split?: Split): Dataset {
  if (!existsSync(path)) throw new Error(`data path ${path} does not exist`);
  if (statSync(path).isDirectory() && looksLikeStl10(path)) {
    return split ? new Stl10Dataset(path, split) : Stl10Dataset.forTraining(path);
  }
  if (looksLikeIdx(path)) {
    if (statSync(path).isFile()) return new IdxDataset(path);
    return IdxDataset.fromDir(path, split === 'test' ? 'test' : 'train');
  }
  return new FolderDataset(path);
}
