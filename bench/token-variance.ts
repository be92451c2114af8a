/**
 * npm run bench:tokens -- <model dir>... [--data DIR] — where the variance of frozen patch tokens
 * lives: position, image or patch (bench/token-shares.ts), on 512 images of the seeded
 * validation split, for each model package and a random-init encoder of the first
 * one's architecture. An analysis of the recipe study (docs/recipe-study.md), not a test.
 */
import { parseArgs } from 'node:util';
import { Embedder } from '../runtime/embedder.ts';
import { toRgb } from '../format/preprocess.ts';
import { labeledSplits } from '../eval/probe.ts';
import { modelConfig } from '../eval/eval.ts';
import { encoderGraph } from '../onnx/inference.ts';
import { encoderSpecs } from '../model/vit.ts';
import { ParamStore } from '../model/params.ts';
import { tokenVarianceShares } from './token-shares.ts';

const { values, positionals } = parseArgs({
  options: {
    data: { type: 'string', default: '/usr/share/datasets/fashion-mnist' },
    images: { type: 'string', default: '512' },
  },
  allowPositionals: true,
});
if (!positionals.length) throw new Error('usage: npm run bench:tokens -- <model dir>... [--data DIR] [--images N]');
const sp = labeledSplits({ data: values.data!, seed: 0, validation: true });
const items = sp.testItems.slice(0, Number(values.images));

async function shares(e: Embedder) {
  const { rows, cols } = e.manifest.patches;
  const n = rows * cols;
  const d = e.manifest.embeddingDim;
  const tokens = new Float32Array(items.length * n * d);
  for (let s = 0; s < items.length; s += 64) {
    const imgs = await Promise.all(
      items.slice(s, s + 64).map(async (i) => toRgb(await sp.test.read(i), e.manifest.preprocess)),
    );
    tokens.set((await e.embed(imgs)).tokens, s * n * d);
  }
  return tokenVarianceShares(tokens, items.length, n, d);
}

const pct = (v: number) => (100 * v).toFixed(1);
console.log(
  `${items.length} validation images of ${values.data}; shares of the variance of layer-normalised target-encoder tokens (%)\n`,
);
console.log('| model | images seen | position | image | patch (residual) |\n| --- | --- | --- | --- | --- |');
let first: Embedder | undefined;
for (const dir of positionals) {
  const e = await Embedder.open(dir, { threads: 2 });
  const s = await shares(e);
  console.log(
    `| ${dir} | ${e.manifest.training.imagesSeen} | ${pct(s.position)} | ${pct(s.image)} | ${pct(s.residual)} |`,
  );
  if (first) await e.close();
  else first = e;
}
const cfg = modelConfig(first!.manifest);
const random = await Embedder.fromGraph(
  first!.manifest,
  encoderGraph(cfg, ParamStore.init(encoderSpecs(cfg), 0, 'random-init')),
  { threads: 2 },
);
const r = await shares(random);
console.log(
  `| random-init (${cfg.dim}×${cfg.depth}, patch ${cfg.patchSize}) | 0 | ${pct(r.position)} | ${pct(r.image)} | ${pct(r.residual)} |`,
);
await Promise.all([random.close(), first!.close()]);
