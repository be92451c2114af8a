/** What the explorer page asks beyond embeddings: what the model expects behind hidden patches, and a map of the gallery. */
import type { Request, Response } from 'express';
import { UMAP } from 'umap-js';
import { ApiError } from '../errors.ts';
import type { Service } from '../service.ts';
import { galleryOf } from './gallery.ts';
import { checkBox, parseImages } from './inputs.ts';

/**
 * POST /v1/reconstruct: one image and a `box` of patches to hide → for each hidden patch, the
 * gallery patches nearest to the embedding the predictor expects there from the visible ones.
 */
export async function reconstruct(svc: Service, req: Request, res: Response, signal?: AbortSignal): Promise<void> {
  const m = svc.manifest;
  if (!svc.predictor) {
    throw new ApiError(
      'no_predictor',
      `model '${m.id}' has no predictor with a context encoder, so it cannot say what is behind a block (export the run again with \`ijepa export\`; encoders cut with --layers have none)`,
    );
  }
  const gallery = galleryOf(svc);
  const { items, options } = parseImages(req, 1);
  if (items.length !== 1) throw new ApiError('bad_request', 'reconstruct takes exactly one image');
  const { rows, cols } = m.patches;
  if (!options.box)
    throw new ApiError('bad_request', `give the patches to hide as box=row0,col0,row1,col1 (grid ${rows}×${cols})`);
  const [r0, c0, r1, c1] = checkBox(options.box, rows, cols);
  const hidden: number[] = [];
  for (let r = r0; r < r1; r++) for (let c = c0; c < c1; c++) hidden.push(r * cols + c);
  if (hidden.length === rows * cols)
    throw new ApiError('bad_request', 'the box hides every patch: leave some visible to predict from');
  const predictor = svc.predictor;
  const near = await svc.query(async () => {
    const [decoded] = await svc.decodeAll(items, signal);
    if ('error' in decoded) throw decoded.error;
    const t0 = performance.now();
    const pred = await predictor.predict(decoded.result, hidden);
    const near = await gallery.nearestPatches(pred, hidden.length, options.neighbours, { signal });
    svc.metrics.stage.observe({ stage: 'reconstruct' }, (performance.now() - t0) / 1000);
    return near;
  }, signal);
  res.json({
    model: m.id,
    grid: [rows, cols],
    patchSize: m.patches.size,
    box: [r0, c0, r1, c1],
    patches: hidden.map((p, i) => ({ position: [Math.floor(p / cols), p % cols], neighbours: near[i] })),
  });
}

/** Points of the map, one per image; at most this many images are laid out. */
const MAP_POINTS = 2000;
const LABEL_KEYS = ['label', 'class', 'category'];

/** The map of one gallery version, being computed or done: concurrent requests share one layout. */
let cached: { gallery: unknown; version: number; body: Promise<unknown> } | null = null;

/**
 * GET /v1/map: the gallery's pooled embeddings laid out in 2-D by UMAP (seeded, so the same
 * gallery gives the same map), with each image's label from its metadata (`label`, `class` or
 * `category`) when it has one. Recomputed only when the gallery changed.
 */
export async function galleryMap(svc: Service, _req: Request, res: Response): Promise<void> {
  const gallery = galleryOf(svc);
  if (cached?.gallery !== gallery || cached.version !== gallery.version) {
    const mine = { gallery, version: gallery.version, body: layout(svc, gallery) };
    cached = mine;
    mine.body.catch(() => {
      if (cached === mine) cached = null;
    });
  }
  res.json(await cached.body);
}

async function layout(svc: Service, gallery: ReturnType<typeof galleryOf>): Promise<unknown> {
  const { ids, pooled, metadata } = gallery.pooledSample(MAP_POINTS);
  const d = svc.manifest.embeddingDim;
  const rows = ids.map((_, i) => Array.from(pooled.subarray(i * d, (i + 1) * d)));
  let xy: number[][];
  if (rows.length < 4) xy = rows.map((_, i) => [i, 0]);
  else {
    let s = 12345;
    const random = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
    const umap = new UMAP({ nComponents: 2, nNeighbors: Math.min(15, rows.length - 1), minDist: 0.1, random });
    xy = await umap.fitAsync(rows);
  }
  const label = (m?: Record<string, unknown>) => {
    const v = LABEL_KEYS.map((k) => m?.[k]).find((x) => typeof x === 'string' || typeof x === 'number');
    return v === undefined ? null : String(v);
  };
  return {
    total: gallery.size,
    points: ids.map((id, i) => ({ id, x: xy[i][0], y: xy[i][1], label: label(metadata[i]) })),
  };
}
