/**
 * npm run bench:loader — images/s and views/s of the training loader alone (train/data/loader.ts),
 * for a multi-crop recipe, per number of worker threads; and what it costs: CPU seconds of the
 * whole process per image (the share of the cores the step no longer has) and how busy the
 * calling thread (the step's) was.
 *   DATA (an image folder, /tmp/cifar/train), ITEMS (images used, 4096: the first pass decodes,
 *   later ones hit the cache), BATCH (64), SECONDS (timed per row after the first pass, 15),
 *   WORKERS (comma-separated, 1,2), RECIPE (JSON augment overrides; default the lejepa recipe's: 2 global views at
 *   32 px and 6 local at 16 px with colour jitter, grayscale and solarize)
 */
import { performance } from 'node:perf_hooks';
import { resolveConfig } from '../train/config.ts';
import { recipeOverrides } from '../train/recipes.ts';
import { FolderDataset } from '../train/data/folder.ts';
import { subset } from '../train/data/dataset.ts';
import { BatchLoader } from '../train/data/loader.ts';

const data = process.env.DATA ?? '/tmp/cifar/train';
const items = Number(process.env.ITEMS ?? 4096);
const batch = Number(process.env.BATCH ?? 64);
const seconds = Number(process.env.SECONDS ?? 15);
const workerCounts = (process.env.WORKERS ?? '1,2').split(',').map(Number);
const recipe = process.env.RECIPE ? JSON.parse(process.env.RECIPE) : recipeOverrides('lejepa').augment;

const cfg = resolveConfig('vit-tiny', { objective: 'ijepa', augment: recipe });
const all = new FolderDataset(data);
const step = Math.max(1, Math.floor(all.size / items));
const ds = subset(
  all,
  Array.from({ length: Math.min(items, all.size) }, (_, i) => i * step),
);
const viewsPerImage = cfg.augment.views + cfg.augment.localViews;
console.log(
  `${ds.size} images of ${data}, batch ${batch}, ${cfg.augment.views} global views at ${cfg.model.imageSize} px + ` +
    `${cfg.augment.localViews} local at ${cfg.augment.localSize} px, ${JSON.stringify(recipe)}`,
);
console.log('workers | pass           | images/s | views/s | process CPU ms/image | calling thread busy');

for (const workers of workerCounts) {
  const loader = new BatchLoader(ds, {
    batch,
    seed: 0,
    preprocess: { size: cfg.model.imageSize, ...cfg.normalize, resize: 'squash' },
    patch: cfg.model.patchSize,
    augment: cfg.augment,
    workers,
  });
  await loader.next(); // the threads start
  const row = async (what: string, done: (n: number, t: number) => boolean) => {
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    const elu0 = performance.eventLoopUtilization();
    let n = 0;
    while (!done(n, (performance.now() - t0) / 1000)) n += (await loader.next()).batch;
    const t = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const elu = performance.eventLoopUtilization(elu0);
    console.log(
      `${String(workers).padStart(7)} | ${what.padEnd(14)} | ${(n / t).toFixed(0).padStart(8)} | ` +
        `${((n * viewsPerImage) / t).toFixed(0).padStart(7)} | ${((cpu.user + cpu.system) / 1000 / n).toFixed(2).padStart(20)} | ` +
        `${(100 * elu.utilization).toFixed(0)}%`,
    );
  };
  // The rest of the first epoch: every image decoded once.
  await row('first (decode)', (n) => n >= loader.batchesPerEpoch * batch - batch);
  await row('cached', (_, t) => t >= seconds);
  loader.close();
}
