/** What the explorer page asks beyond embeddings: what the model expects behind hidden patches, and a map of the gallery. */
import type { Request, Response } from 'express';
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

/**
 * GET /v1/map: the gallery's pooled embeddings laid out in 2-D by UMAP (seeded, so the same
 * gallery gives the same map), with each image's label from its metadata (`label`, `class` or
 * `category`) when it has one. Laid out again when the gallery changed; meanwhile the previous
 * layout is answered, its `version` behind `galleryVersion`.
 */
export async function galleryMap(svc: Service, _req: Request, res: Response): Promise<void> {
  const gallery = galleryOf(svc);
  const map = await svc.map(gallery).current();
  res.json({ ...map, galleryVersion: await gallery.version() });
}
