/**
 * `ijepa index`: embeds a folder of images with a model package and adds every patch to a gallery,
 * offline. Resumable: images already in the gallery (by id = path relative to --images) are skipped,
 * and each added image is durable as soon as it is added. With a shard, the process takes only its
 * share of the folder (serve/shard.ts), so several processes can index one folder into one
 * PostgreSQL gallery at once, none adding an image another adds.
 */
import type { Device } from '../runtime/device.ts';
import cliProgress from 'cli-progress';
import { relative } from 'node:path';
import { readFile } from 'node:fs/promises';
import { listImages } from '../runtime/folder.ts';
import { Embedder } from '../runtime/embedder.ts';
import { openStore } from './gallery/open.ts';
import { decodeImage } from '../runtime/decode.ts';
import { Gate } from '../runtime/gate.ts';
import { defaultServiceOptions } from './service.ts';
import { inShard, type Shard } from './shard.ts';

export interface IndexOptions {
  /** Where the encoder runs. */
  device?: Device;
  /** onnxruntime threads for the encoder (the CLI's default: all cores). */
  threads: number;
  model: string;
  images: string;
  /** A gallery directory, or a PostgreSQL URL (postgres://…). */
  gallery: string;
  batch?: number;
  /** Index only this share of the folder; `total` then counts the share's images. */
  shard?: Shard;
  progress?: boolean;
  log?: (s: string) => void;
}

export async function indexImages(
  o: IndexOptions,
): Promise<{ added: number; skipped: number; failed: number; total: number }> {
  const log = o.log ?? ((s: string) => console.error(s));
  // The images are listed first so that a wrong --images creates no gallery directory.
  const shard = o.shard;
  const files = listImages(o.images).filter((f) => !shard || inShard(relative(o.images, f), shard));
  const embedder = await Embedder.open(o.model, { device: o.device, threads: o.threads });
  const m = embedder.manifest;
  const gallery = await openStore(
    o.gallery,
    { modelId: m.id, dim: m.embeddingDim, encoder: m.files.encoder.sha256 },
    { log },
  ).catch(async (e) => {
    await embedder.close();
    throw e;
  });
  const ids = files.map((f) => relative(o.images, f));
  const present = await gallery.stored(ids);
  const todo = ids.map((id, i) => ({ id, i })).filter(({ id }) => !present.has(id));
  const batch = o.batch ?? 32;
  const bar = o.progress
    ? new cliProgress.SingleBar(
        { format: 'index |{bar}| {value}/{total} images | ETA {eta_formatted}', hideCursor: true },
        cliProgress.Presets.shades_classic,
      )
    : null;
  bar?.start(todo.length, 0);
  let added = 0;
  let failed = 0;
  const limits = {
    maxBytes: Infinity,
    maxPixels: 100_000_000,
    maxSide: defaultServiceOptions.maxSide,
    maxAspect: defaultServiceOptions.maxAspect,
  };
  const gate = new Gate(limits.maxPixels);
  try {
    for (let s = 0; s < todo.length; s += batch) {
      const part = todo.slice(s, s + batch);
      const decoded = await Promise.allSettled(
        part.map(async ({ i }) => {
          return decodeImage(await readFile(files[i]), limits, m.preprocess, gate);
        }),
      );
      const ok = part.filter((_, k) => decoded[k].status === 'fulfilled');
      decoded.forEach((r, k) => {
        if (r.status === 'rejected') {
          failed++;
          log(`warning: skipped ${part[k].id}: ${(r.reason as Error).message}`);
        }
      });
      if (ok.length) {
        const rgb = decoded
          .filter((r): r is PromiseFulfilledResult<Uint8Array> => r.status === 'fulfilled')
          .map((r) => r.value);
        const e = await embedder.embed(rgb);
        const n = m.patches.rows * m.patches.cols * m.embeddingDim;
        // One journal record (one fsync), or one transaction, per batch.
        await gallery.commit(
          ok.map(({ id }, k) => ({
            add: {
              id,
              patches: e.tokens.subarray(k * n, (k + 1) * n),
              pooled: e.pooled.subarray(k * m.embeddingDim, (k + 1) * m.embeddingDim),
              rows: m.patches.rows,
              cols: m.patches.cols,
              metadata: { path: id },
            },
          })),
        );
        added += ok.length;
      }
      bar?.update(Math.min(todo.length, s + batch));
    }
  } finally {
    bar?.stop();
    await gallery.close();
    await embedder.close();
  }
  return { added, skipped: ids.length - todo.length, failed, total: ids.length };
}
