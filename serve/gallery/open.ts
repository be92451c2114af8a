/** `--gallery`: a postgres:// URL opens the PostgreSQL store, anything else a directory of the embedded one. */
import { EmbeddedStore } from './embedded.ts';
import { Gallery, type Identity, type Reembed } from './gallery.ts';
import { isDatabaseUrl, PostgresStore } from './postgres.ts';
import type { GalleryStore } from './store.ts';

export interface StoreOptions {
  log?: (s: string) => void;
  /** Embedded: journal bytes of removed images kept before an online compaction. */
  garbageBytes?: number;
  /** Embedded: re-embed a gallery built with another encoder (in batches of `batch`) instead of refusing it. */
  reembed?: { embed: Reembed; batch: number };
}

export async function openStore(target: string, id: Identity, o: StoreOptions = {}): Promise<GalleryStore> {
  const log = o.log ?? (() => {});
  if (isDatabaseUrl(target)) {
    if (o.reembed)
      throw new Error(
        '--reembed re-embeds a gallery directory; a PostgreSQL gallery cannot be re-embedded in place: add the images again through the new package into another database',
      );
    return PostgresStore.open(target, id, log);
  }
  if (o.reembed) await Gallery.reembed(target, id, o.reembed.embed, log, o.reembed.batch);
  return new EmbeddedStore(
    Gallery.open(target, id.modelId, id.dim, log, { encoder: id.encoder, garbageBytes: o.garbageBytes }),
  );
}
