/** Image files under a folder: what `ijepa index` embeds and what a folder dataset trains on. */
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

export const IMAGE_EXT = /\.(jpe?g|png|webp|gif|tiff?|avif|heic|heif)$/i;

/** Every image file below `root` (hidden entries skipped), sorted; an error names a missing or empty folder. */
export function listImages(root: string): string[] {
  if (!statSync(root, { throwIfNoEntry: false })?.isDirectory()) throw new Error(`${root} is not a directory`);
  const files: string[] = [];
  walk(root, files);
  files.sort();
  if (files.length === 0) throw new Error(`${root}: no image files (${IMAGE_EXT.source})`);
  return files;
}

function walk(dir: string, out: string[]): void {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.name.startsWith('.')) continue;
    const p = join(dir, entry.name);
    if (entry.isDirectory()) walk(p, out);
    else if (entry.isFile() && IMAGE_EXT.test(entry.name)) out.push(p);
  }
}
