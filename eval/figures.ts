/**
 * `ijepa figures`: the pictures that show whether a run learned something, as PNGs.
 *   masks.png     held-out images with the context (everything not greyed) and the four target blocks;
 *   curves.png    loss, LR, EMA momentum and the collapse diagnostics over optimizer steps;
 *   map.png       UMAP of pooled target-encoder features of held-out images, coloured by class;
 *   recon.png     nearest-patch reconstruction: the predictor's embedding for each target patch is
 *                 matched (cosine) against target-encoder patch embeddings of other images, and
 *                 that patch's pixels are pasted in: original | context | reconstruction.
 */
import type { Device } from '../runtime/device.ts';
import { mkdirSync, readFileSync, existsSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import sharp from 'sharp';
import { UMAP } from 'umap-js';
import { readCheckpoint } from '../train/checkpoint.ts';
import { parseConfig } from '../train/config.ts';
import { CHECKPOINT_FILE, METRICS_FILE, preprocessOf } from '../train/loop.ts';
import { sampleMasks, type MaskBatch } from '../train/masks.ts';
import { gridOf, type ModelConfig } from '../model/presets.ts';
import { encoderSpecs, predictorSpecs } from '../model/vit.ts';
import { ParamStore } from '../model/params.ts';
import { Rng } from '../model/rng.ts';
import { labeledSplits } from './probe.ts';
import { encoderGraph, predictorGraph } from '../onnx/inference.ts';
import { contextEncoderGraph } from '../onnx/inference.ts';
import { predictorKeyMask } from '../train/engine.ts';
import { linePanelsSvg, scatterSvg, writePng, type LinePanel } from './plot.ts';
import { OnnxModel } from '../runtime/model.ts';
import { Embedder } from '../runtime/embedder.ts';
import { normalizePatches, type Preprocess } from '../format/preprocess.ts';
import { describeFile } from '../format/package.ts';
import { runManifest } from '../train/export.ts';
import type { Dataset } from '../train/data/dataset.ts';
import { LabeledImages, type ImageBatch } from './images.ts';

export interface FigureOptions {
  /** Where the encoder and predictor run. */
  device?: Device;
  /** onnxruntime threads of the encoder and predictor (the CLI's default: all cores). */
  threads: number;
  run: string;
  /** Labeled data; held-out images come from its test split (or the validation split for --holdout runs). */
  data: string;
  out?: string;
  /** Images in the mask and reconstruction figures. */
  count?: number;
  /** Points in the feature map. */
  mapPoints?: number;
  /** Gallery images for the nearest-patch reconstruction. */
  gallery?: number;
  seed?: number;
  log?: (s: string) => void;
}

/** Pixels per image in the picture grids. */
const CELL = 128;
/** Images per encoder run. */
const EMBED_BATCH = 64;

/** Readable images of `items`, decoded once in batches; unreadable ones are skipped with a warning. */
async function decoded(ds: Dataset, items: number[], p: Preprocess, log: (s: string) => void): Promise<ImageBatch> {
  // One pass: decoded as they are read.
  const images = await LabeledImages.open(ds, items, p, { log, keep: false });
  const all: ImageBatch = { rgb: [], labels: [] };
  for await (const b of images.batches(EMBED_BATCH)) {
    all.rgb.push(...b.rgb);
    all.labels.push(...b.labels);
  }
  return all;
}

/** Patch embeddings [n, N, D] and pooled embeddings [n, D] of the images, in the probes' batches. */
async function embedAll(
  embedder: Embedder,
  rgb: Uint8Array[],
): Promise<{ tokens: Float32Array; pooled: Float32Array }> {
  const { rows, cols } = embedder.manifest.patches;
  const d = embedder.manifest.embeddingDim;
  const tokens = new Float32Array(rgb.length * rows * cols * d);
  const pooled = new Float32Array(rgb.length * d);
  for (let s = 0; s < rgb.length; s += EMBED_BATCH) {
    const e = await embedder.embed(rgb.slice(s, s + EMBED_BATCH));
    tokens.set(e.tokens, s * rows * cols * d);
    pooled.set(e.pooled, s * d);
  }
  return { tokens, pooled };
}

/** An RGB image upscaled (nearest neighbour, so patches stay crisp) as a data URI. */
async function dataUri(rgb: Uint8Array, size: number): Promise<string> {
  const png = await sharp(Buffer.from(rgb), { raw: { width: size, height: size, channels: 3 } })
    .resize(CELL, CELL, { kernel: 'nearest' })
    .png()
    .toBuffer();
  return `data:image/png;base64,${png.toString('base64')}`;
}

const TARGET_COLORS = ['#e6194b', '#3cb44b', '#4363d8', '#f58231', '#911eb4', '#42d4f4'];

function patchRect(p: number, cols: number, cell: number, x0: number, y0: number): string {
  const r = Math.floor(p / cols);
  const c = p % cols;
  return `x="${x0 + c * cell}" y="${y0 + r * cell}" width="${cell}" height="${cell}"`;
}

function maskSets(masks: MaskBatch, b: number) {
  const ctx = new Set<number>();
  for (let j = 0; j < masks.ctxCount[b]; j++) ctx.add(masks.ctxIdx[b * masks.ctxLen + j]);
  const targets = Array.from({ length: masks.numTargets }, (_, t) =>
    Array.from(masks.tgtIdx.subarray((t * masks.batch + b) * masks.tgtLen, (t * masks.batch + b + 1) * masks.tgtLen)),
  );
  return { ctx, targets };
}

async function masksFigure(images: Uint8Array[], masks: MaskBatch, m: ModelConfig, path: string): Promise<void> {
  const { rows, cols } = gridOf(m);
  const cell = CELL / cols;
  const perRow = Math.min(4, images.length);
  const gap = 8;
  const body: string[] = [];
  for (let b = 0; b < images.length; b++) {
    const x0 = (b % perRow) * (CELL + gap);
    const y0 = Math.floor(b / perRow) * (CELL + gap) + 24;
    body.push(
      `<image x="${x0}" y="${y0}" width="${CELL}" height="${CELL}" href="${await dataUri(images[b], m.imageSize)}"/>`,
    );
    const { ctx, targets } = maskSets(masks, b);
    for (let p = 0; p < rows * cols; p++)
      if (!ctx.has(p)) body.push(`<rect ${patchRect(p, cols, cell, x0, y0)} fill="#808080" fill-opacity="0.6"/>`);
    targets.forEach((blk, t) => {
      for (const p of blk)
        body.push(
          `<rect ${patchRect(p, cols, cell, x0, y0)} fill="${TARGET_COLORS[t % TARGET_COLORS.length]}" fill-opacity="0.25" stroke="${TARGET_COLORS[t % TARGET_COLORS.length]}" stroke-width="1"/>`,
        );
    });
  }
  const width = perRow * (CELL + gap) - gap;
  const height = Math.ceil(images.length / perRow) * (CELL + gap) + 24;
  const title = `<text x="${width / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">context (clear) and ${masks.numTargets} target blocks (coloured); grey: neither</text>`;
  await writePng(
    `<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="${width}" height="${height}" font-family="DejaVu Sans, Arial, sans-serif"><rect width="100%" height="100%" fill="white"/>${title}${body.join('')}</svg>`,
    path,
  );
}

async function curvesFigure(run: string, sigregWeight: number, path: string): Promise<void> {
  const lines = readFileSync(join(run, METRICS_FILE), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, number>);
  // The zero predictor is scored on the prediction loss alone, so that is the curve to hold against
  // it. Runs without SIGReg do not log predLoss (it is their loss), nor do SIGReg runs recorded
  // before it was logged: both get it back from the total and the SIGReg term.
  for (const l of lines) if (!Number.isFinite(l.predLoss)) l.predLoss = l.loss - sigregWeight * (l.sigreg ?? 0);
  const pts = (k: string) => lines.filter((l) => Number.isFinite(l[k])).map((l) => [l.step, l[k]] as [number, number]);
  const healthy = lines.find((l) => Number.isFinite(l.featStdHealthy))?.featStdHealthy;
  const lossSeries = [
    ...(sigregWeight > 0 ? [{ name: `total (+ ${sigregWeight} × SIGReg)`, points: pts('loss') }] : []),
    { name: 'prediction loss', points: pts('predLoss') },
    { name: 'predict zeros', points: pts('zeroLoss'), dashed: true },
  ];
  const panels: LinePanel[] = [
    { title: 'training loss', xLabel: 'optimizer step', series: lossSeries, logY: true },
    { title: 'learning rate', xLabel: 'optimizer step', series: [{ name: 'lr', points: pts('lr') }] },
    { title: 'EMA momentum', xLabel: 'optimizer step', series: [{ name: 'momentum', points: pts('momentum') }] },
    {
      title: 'feature std (L2-normalised target tokens)',
      xLabel: 'optimizer step',
      series: [{ name: 'featStd', points: pts('featStd') }],
      hlines: healthy
        ? [
            { y: healthy, label: 'healthy 1/√d', color: '#2ca02c' },
            { y: 0.2 * healthy, label: 'collapse warning', color: '#d62728' },
          ]
        : [],
    },
    { title: 'RankMe of target tokens', xLabel: 'optimizer step', series: [{ name: 'RankMe', points: pts('rankMe') }] },
    { title: 'online–target (EMA) gap', xLabel: 'optimizer step', series: [{ name: 'emaGap', points: pts('emaGap') }] },
  ];
  await writePng(linePanelsSvg(panels, 3, 380, 240), path);
}

/** Row-wise layer norm without affine (the targets' normalisation), then L2 normalisation. */
function normalizeRows(x: Float32Array, n: number, d: number, eps: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let i = 0; i < n; i++) {
    let mean = 0;
    for (let j = 0; j < d; j++) mean += x[i * d + j];
    mean /= d;
    let v = 0;
    for (let j = 0; j < d; j++) v += (x[i * d + j] - mean) ** 2;
    const inv = 1 / Math.sqrt(v / d + eps);
    let norm = 0;
    for (let j = 0; j < d; j++) norm += (out[i * d + j] = (x[i * d + j] - mean) * inv) ** 2;
    const s = 1 / Math.max(Math.sqrt(norm), 1e-12);
    for (let j = 0; j < d; j++) out[i * d + j] *= s;
  }
  return out;
}

export async function makeFigures(o: FigureOptions): Promise<string[]> {
  const log = o.log ?? ((s: string) => console.error(s));
  const seed = o.seed ?? 0;
  const out = o.out ?? join(o.run, 'figures');
  const ckptPath = join(o.run, CHECKPOINT_FILE);
  if (!existsSync(ckptPath))
    throw new Error(`${o.run} has no ${CHECKPOINT_FILE}: is it a run directory written by \`ijepa train\`?`);
  const ckpt = readCheckpoint(ckptPath);
  const cfg = parseConfig(ckpt.meta.config, o.run);
  if (cfg.objective !== 'ijepa')
    throw new Error(`${o.run} was trained with objective '${cfg.objective}': it has no predictor to draw figures from`);
  const m = cfg.model;
  const pre = preprocessOf(cfg);
  const grid = gridOf(m);
  const n = grid.rows * grid.cols;
  const pd = m.patchSize * m.patchSize * m.channels;
  const online = new ParamStore([...encoderSpecs(m), ...predictorSpecs(m)], ckpt.arrays.get('online'));
  const target = new ParamStore(encoderSpecs(m), ckpt.arrays.get('target'));
  const sp = labeledSplits({ data: o.data, seed, validation: cfg.holdout });
  mkdirSync(out, { recursive: true });
  const pick = (items: number[], k: number, stream: string) =>
    Array.from(Rng.for(seed, stream).permutation(items.length).subarray(0, Math.min(k, items.length)), (i) => items[i]);
  const written: string[] = [];

  // Masks and reconstruction share images and masks.
  const count = o.count ?? 8;
  const shown = await decoded(sp.test, pick(sp.testItems, count, 'figures-shown'), pre, log);
  const b = shown.rgb.length;
  const masks = sampleMasks(Rng.for(seed, 'figures-masks'), grid, b, cfg.masks);
  await masksFigure(shown.rgb, masks, m, join(out, 'masks.png'));
  written.push(join(out, 'masks.png'));

  if (existsSync(join(o.run, METRICS_FILE))) {
    await curvesFigure(o.run, cfg.sigreg.weight, join(out, 'curves.png'));
    written.push(join(out, 'curves.png'));
  }

  const encoder = encoderGraph(m, target);
  const session = { device: o.device, threads: o.threads };
  const embedder = await Embedder.fromGraph(
    runManifest(
      ckpt.meta,
      cfg,
      m,
      { encoder: describeFile('encoder.onnx', encoder) },
      { id: basename(resolve(o.run)) },
    ),
    encoder,
    session,
  );
  try {
    // Feature map.
    log('figures: feature map (UMAP)');
    const mapped = await decoded(sp.test, pick(sp.testItems, o.mapPoints ?? 2000, 'figures-map'), pre, log);
    const { pooled } = await embedAll(embedder, mapped.rgb);
    const rows = Array.from({ length: mapped.rgb.length }, (_, i) =>
      Array.from(pooled.subarray(i * m.dim, (i + 1) * m.dim)),
    );
    const rng = Rng.for(seed, 'umap');
    const umap = new UMAP({
      nComponents: 2,
      nNeighbors: Math.min(15, Math.max(2, rows.length - 1)),
      minDist: 0.1,
      random: () => rng.next(),
    });
    const xy = umap.fit(rows);
    await writePng(
      scatterSvg(
        `UMAP of pooled target-encoder features (${rows.length} held-out images)`,
        xy,
        mapped.labels,
        sp.classes,
      ),
      join(out, 'map.png'),
    );
    written.push(join(out, 'map.png'));

    // Nearest-patch reconstruction.
    log('figures: nearest-patch reconstruction');
    const gallery = await decoded(sp.train, pick(sp.trainItems, o.gallery ?? 1000, 'figures-gallery'), pre, log);
    const gTokens = normalizeRows((await embedAll(embedder, gallery.rgb)).tokens, gallery.rgb.length * n, m.dim, m.eps);
    const patches = new Float32Array(b * n * pd);
    shown.rgb.forEach((x, i) => normalizePatches(x, pre, m.patchSize, patches, i * n * pd));
    const ctxEncoder = await OnnxModel.load(contextEncoderGraph(m, online), session);
    const predictor = await OnnxModel.load(predictorGraph(m, online), session);
    const int64 = (a: Int32Array) => BigInt64Array.from(a, (v) => BigInt(v));
    const context = (
      await ctxEncoder.run({
        patches: { data: patches, dims: [b, n, pd] },
        ctx_idx: { data: int64(masks.ctxIdx), dims: [b, masks.ctxLen] },
        ctx_mask: { data: masks.ctxMask, dims: [b, masks.ctxLen] },
      })
    ).context.data;
    const M = masks.numTargets;
    const per = masks.ctxLen * m.dim;
    const repeated = new Float32Array(M * b * per);
    const ctxIdx = new Int32Array(M * b * masks.ctxLen);
    for (let t = 0; t < M; t++) {
      repeated.set(context, t * b * per);
      ctxIdx.set(masks.ctxIdx, t * b * masks.ctxLen);
    }
    const pred = (
      await predictor.run({
        context: { data: repeated, dims: [M * b, masks.ctxLen, m.dim] },
        ctx_idx: { data: int64(ctxIdx), dims: [M * b, masks.ctxLen] },
        key_mask: { data: predictorKeyMask(masks), dims: [M * b, masks.ctxLen + masks.tgtLen] },
        tgt_idx: { data: int64(masks.tgtIdx), dims: [M * b, masks.tgtLen] },
      })
    ).pred.data;
    await Promise.all([ctxEncoder.release(), predictor.release()]);
    const predUnit = normalizeRows(pred, M * b * masks.tgtLen, m.dim, m.eps);
    await reconFigure(shown.rgb, masks, predUnit, gTokens, gallery.rgb, m, join(out, 'recon.png'));
    written.push(join(out, 'recon.png'));
  } finally {
    await embedder.close();
  }
  return written;
}

async function reconFigure(
  images: Uint8Array[],
  masks: MaskBatch,
  pred: Float32Array,
  gallery: Float32Array,
  galleryRgb: Uint8Array[],
  m: ModelConfig,
  path: string,
): Promise<void> {
  const { rows, cols } = gridOf(m);
  const n = rows * cols;
  const s = m.imageSize;
  const p = m.patchSize;
  const d = m.dim;
  const copyPatch = (dst: Uint8Array, src: Uint8Array, dstPatch: number, srcPatch: number) => {
    const [dr, dc, sr, sc] = [
      Math.floor(dstPatch / cols),
      dstPatch % cols,
      Math.floor(srcPatch / cols),
      srcPatch % cols,
    ];
    for (let y = 0; y < p; y++) {
      const so = 3 * ((sr * p + y) * s + sc * p);
      dst.set(src.subarray(so, so + 3 * p), 3 * ((dr * p + y) * s + dc * p));
    }
  };
  const grey = (dst: Uint8Array, patch: number) => {
    const [r, c] = [Math.floor(patch / cols), patch % cols];
    for (let y = 0; y < p; y++) dst.fill(128, 3 * ((r * p + y) * s + c * p), 3 * ((r * p + y) * s + c * p + p));
  };
  const body: string[] = [];
  const gap = 8;
  const top = 24;
  for (let b = 0; b < images.length; b++) {
    const { ctx, targets } = maskSets(masks, b);
    const contextOnly = new Uint8Array(images[b].length).fill(128);
    for (const q of ctx) copyPatch(contextOnly, images[b], q, q);
    const recon = contextOnly.slice();
    targets.forEach((blk, t) =>
      blk.forEach((q, j) => {
        const row = ((t * masks.batch + b) * masks.tgtLen + j) * d;
        let best = -Infinity;
        let at = 0;
        for (let g = 0; g < gallery.length / d; g++) {
          let dot = 0;
          for (let k = 0; k < d; k++) dot += pred[row + k] * gallery[g * d + k];
          if (dot > best) {
            best = dot;
            at = g;
          }
        }
        grey(recon, q);
        copyPatch(recon, galleryRgb[Math.floor(at / n)], q, at % n);
      }),
    );
    const y0 = top + b * (CELL + gap);
    for (const [k, img] of [images[b], contextOnly, recon].entries())
      body.push(
        `<image x="${k * (CELL + gap)}" y="${y0}" width="${CELL}" height="${CELL}" href="${await dataUri(img, s)}"/>`,
      );
  }
  const width = 3 * CELL + 2 * gap;
  const height = top + images.length * (CELL + gap) - gap;
  const heads = ['original', 'context', 'nearest patches']
    .map(
      (t, k) =>
        `<text x="${k * (CELL + gap) + CELL / 2}" y="16" text-anchor="middle" font-size="12" font-weight="bold">${t}</text>`,
    )
    .join('');
  await writePng(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="DejaVu Sans, Arial, sans-serif"><rect width="100%" height="100%" fill="white"/>${heads}${body.join('')}</svg>`,
    path,
  );
}
