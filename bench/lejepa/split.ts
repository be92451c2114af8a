/**
 * node --import tsx bench/lejepa/split.ts <image folder> <out dir> — the validation split of a
 * class-folder dataset, written for the PyTorch replica (bench/lejepa/replica.py) by the repo's own
 * dataset opening and split rule, so the replica pre-trains on exactly the images our trainer's
 * holdout does and never sees a validation image. Writes `train.tsv` and `val.tsv` (one
 * `label<TAB>path` per line, in item order) and `classes.json` (class names by label).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { FolderDataset } from '../../train/data/folder.ts';
import { openDataset } from '../../train/data/open.ts';
import { validationSplit } from '../../train/data/split.ts';

const [data, out] = process.argv.slice(2);
if (!data || !out) throw new Error('usage: node --import tsx bench/lejepa/split.ts <image folder> <out dir>');
const ds = openDataset(resolve(data));
if (!(ds instanceof FolderDataset) || !ds.classes)
  throw new Error(`${data} is not a folder of class sub-folders: the replica reads image files by path`);

const split = validationSplit(ds.size);
const lines = (items: number[]) => items.map((i) => `${ds.label(i)}\t${ds.files[i]}\n`).join('');
mkdirSync(out, { recursive: true });
writeFileSync(join(out, 'train.tsv'), lines(split.train));
writeFileSync(join(out, 'val.tsv'), lines(split.validation));
writeFileSync(join(out, 'classes.json'), `${JSON.stringify(ds.classes)}\n`);
console.log(`${split.train.length} training and ${split.validation.length} validation images of ${data} → ${out}`);
