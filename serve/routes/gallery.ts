/** Gallery routes: add / get / delete images, and nearest-image search by patch MaxSim. */
import type { Request, Response } from 'express';
import sharp from 'sharp';
import { z } from 'zod';
import { ApiError } from '../errors.ts';
import type { Change } from '../gallery/gallery.ts';
import type { GalleryStore } from '../gallery/store.ts';
import type { Service } from '../service.ts';
import { checkBox, fromBase64, parseImages, type ImageInput } from './inputs.ts';

/**
 * Segments joined by '/', none empty, '.' or '..': URL parsers resolve dot segments (a browser
 * sends `/v1/gallery/../gallery/a` as `/v1/gallery/a`) and some proxies merge '//', so such an id
 * could not be named by its route.
 */
const SEGMENT = String.raw`(?!\.\.?(?:/|$))[\w.:@-]+`;
const ID = new RegExp(`^${SEGMENT}(?:/${SEGMENT})*$`);
const ID_RULE =
  "ids are 1-128 characters of letters, digits and _ . : @ - in segments separated by '/', none of them empty, '.' or '..'";
export const idSchema = z
  .string()
  .min(1, ID_RULE)
  .max(128, ID_RULE)
  .regex(ID, ID_RULE)
  .describe("gallery id: segments separated by '/', none of them empty, '.' or '..'");
/** Deeper metadata is refused: a journal record must serialise (5,000 levels overflowed the stack). */
export const MAX_METADATA_DEPTH = 32;

/** Nesting depth of a JSON value, without recursion. */
function depthOf(value: unknown): number {
  let max = 0;
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length) {
    const [v, d] = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    max = Math.max(max, d);
    if (d > MAX_METADATA_DEPTH) break;
    for (const c of Object.values(v)) stack.push([c, d + 1]);
  }
  return max;
}

const metadataSchema = z
  .record(z.string(), z.unknown())
  .refine((m) => depthOf(m) <= MAX_METADATA_DEPTH, `metadata may nest at most ${MAX_METADATA_DEPTH} levels deep`)
  .describe('any JSON object (at most 32 levels deep), returned with the item and its search hits');
const itemSchema = z
  .object({ id: idSchema, image: z.string().describe('base64'), metadata: metadataSchema.optional() })
  .strict();
/** POST /v1/gallery as JSON: one item, or several; /openapi.json is generated from it. */
export const addSchema = z.union([z.object({ items: z.array(itemSchema).min(1) }).strict(), itemSchema]);

export function galleryOf(svc: Service): GalleryStore {
  if (!svc.gallery)
    throw new ApiError('no_gallery', 'this server has no gallery: start it with --gallery <dir or postgres:// URL>');
  return svc.gallery;
}

/** A query parameter given at most once: a repeated one is refused rather than one of its values kept. */
function queryOnce(req: Request, name: string): string | undefined {
  const v = req.query[name];
  if (v === undefined || typeof v === 'string') return v;
  throw new ApiError('bad_request', `query parameter ${name} is given more than once`);
}

export async function addToGallery(svc: Service, req: Request, res: Response, signal?: AbortSignal): Promise<void> {
  const gallery = galleryOf(svc);
  let items: { id: string; metadata?: Record<string, unknown>; input: ImageInput }[];
  let single = false;
  if ((req.headers['content-type'] ?? '').toLowerCase().startsWith('image/')) {
    const id = idSchema.safeParse(queryOnce(req, 'id'));
    if (!id.success) throw new ApiError('bad_request', `query parameter id: ${id.error.issues[0].message}`);
    let metadata: Record<string, unknown> | undefined;
    const given = queryOnce(req, 'metadata');
    if (given !== undefined) {
      let raw: unknown;
      try {
        raw = JSON.parse(given);
      } catch {
        throw new ApiError('bad_request', 'query parameter metadata must be a JSON object');
      }
      const parsed = metadataSchema.safeParse(raw);
      if (!parsed.success)
        throw new ApiError('bad_request', `query parameter metadata: ${parsed.error.issues[0].message}`);
      metadata = parsed.data;
    }
    items = [{ id: id.data, metadata, input: parseImages(req, 1).items[0] }];
    single = true;
  } else {
    if (!(req.headers['content-type'] ?? '').toLowerCase().startsWith('application/json')) {
      throw new ApiError(
        'unsupported_media_type',
        'add images as image/* (with ?id=) or application/json {items: [{id, image, metadata}]}',
      );
    }
    const parsed = addSchema.safeParse(req.body);
    if (!parsed.success)
      throw new ApiError(
        'bad_request',
        `invalid request body: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`).join('; ')}`,
      );
    const list = 'items' in parsed.data ? parsed.data.items : [parsed.data];
    single = !('items' in parsed.data);
    if (list.length > svc.options.maxImages)
      throw new ApiError('bad_request', `${list.length} images in one request; the limit is ${svc.options.maxImages}`);
    // Only the last of two items with one id would be kept, while both were reported added.
    const dup = list.find((it, i) => list.findIndex((o) => o.id === it.id) !== i);
    if (dup) throw new ApiError('bad_request', `id '${dup.id}' appears more than once in items`);
    items = list.map((it, i) => ({ id: it.id, metadata: it.metadata, input: fromBase64(it.image, i) }));
  }
  const outcomes = await svc.embedAll(
    items.map((i) => i.input),
    signal,
  );
  if (single && 'error' in outcomes[0]) throw outcomes[0].error;
  const m = svc.manifest;
  const added: { id: string; patches: number }[] = [];
  const errors: { index: number; id: string; error: string; code: string }[] = [];
  const changes: Change[] = [];
  const size = m.preprocess.size;
  // The image as the model saw it, kept for display (its patch grid is the embeddings').
  const pngs = await Promise.all(
    outcomes.map((o) =>
      'result' in o
        ? sharp(o.result.rgb, { raw: { width: size, height: size, channels: 3 } })
            .png()
            .toBuffer()
        : null,
    ),
  );
  outcomes.forEach((o, i) => {
    if ('error' in o) errors.push({ index: i, id: items[i].id, ...o.error.toJSON() });
    else {
      const { rows, cols } = m.patches;
      changes.push({
        add: {
          id: items[i].id,
          patches: o.result.tokens,
          pooled: o.result.pooled,
          rows,
          cols,
          metadata: items[i].metadata,
          image: pngs[i] ?? undefined,
        },
      });
      added.push({ id: items[i].id, patches: rows * cols });
    }
  });
  // One journal record (or transaction) for the whole request: every image of it is stored, or (on failure) none.
  res.json({ added, errors, size: await gallery.commit(changes) });
}

/** The id of `/v1/gallery/*id`: its path segments, joined again. */
function idOf(req: Request): string {
  const p = req.params.id as unknown as string[] | string;
  return Array.isArray(p) ? p.join('/') : p;
}

export async function getFromGallery(svc: Service, req: Request, res: Response): Promise<void> {
  const id = idOf(req);
  const e = await galleryOf(svc).get(id);
  if (!e) throw new ApiError('not_found', `no gallery image '${id}'`);
  res.json(e);
}

export async function deleteFromGallery(svc: Service, req: Request, res: Response): Promise<void> {
  const id = idOf(req);
  const gallery = galleryOf(svc);
  if (!(await gallery.remove(id))) throw new ApiError('not_found', `no gallery image '${id}'`);
  res.json({ deleted: id });
}

export async function search(svc: Service, req: Request, res: Response, signal?: AbortSignal): Promise<void> {
  const gallery = galleryOf(svc);
  const { items, options } = parseImages(req, 1);
  if (items.length !== 1) throw new ApiError('bad_request', 'search takes exactly one image');
  const m = svc.manifest;
  const { rows, cols } = m.patches;
  const d = m.embeddingDim;
  const [r0, c0, r1, c1] = checkBox(options.box ?? [0, 0, rows, cols], rows, cols);
  // Admitted before its query is embedded: a refused search costs nothing more.
  const hits = await svc.query(async () => {
    const [outcome] = await svc.embedAll(items, signal);
    if ('error' in outcome) throw outcome.error;
    const positions: [number, number][] = [];
    const query = new Float32Array((r1 - r0) * (c1 - c0) * d);
    for (let r = r0; r < r1; r++)
      for (let c = c0; c < c1; c++) {
        query.set(outcome.result.tokens.subarray((r * cols + c) * d, (r * cols + c + 1) * d), positions.length * d);
        positions.push([r, c]);
      }
    const t0 = performance.now();
    const hits = await gallery.search(query, positions, outcome.result.pooled, options.k, options.pooled, {
      signal,
      candidates: svc.options.maxSearchCandidates,
    });
    svc.metrics.stage.observe({ stage: 'search' }, (performance.now() - t0) / 1000);
    return hits;
  }, signal);
  res.json({ model: m.id, grid: [rows, cols], patchSize: m.patches.size, box: [r0, c0, r1, c1], hits });
}

const pageSchema = z.object({
  // Bounded so that every offset is an exact integer and echoes as itself.
  offset: z
    .string()
    .regex(/^\d+$/, 'must be a decimal integer')
    .refine((s) => Number(s) <= Number.MAX_SAFE_INTEGER, `must be at most ${Number.MAX_SAFE_INTEGER}`)
    .transform(Number)
    .optional(),
  limit: z
    .string()
    .regex(/^\d+$/, 'must be a decimal integer')
    .transform(Number)
    .pipe(z.number().int().min(1).max(200))
    .optional(),
});

/** GET /v1/gallery: the images in the order they were added, a page at a time. */
export async function listGallery(svc: Service, req: Request, res: Response): Promise<void> {
  const q = pageSchema.safeParse({ offset: req.query.offset, limit: req.query.limit });
  if (!q.success)
    throw new ApiError(
      'bad_request',
      `bad paging: ${q.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
    );
  const { offset = 0, limit = 50 } = q.data;
  res.json({ offset, limit, ...(await galleryOf(svc).list(offset, limit)) });
}

/** GET /v1/images/{id}: the stored PNG of a gallery image (the model's input size). */
export async function galleryImage(svc: Service, req: Request, res: Response): Promise<void> {
  const id = idOf(req);
  const gallery = galleryOf(svc);
  const png = await gallery.image(id);
  if (!png && !(await gallery.get(id))) throw new ApiError('not_found', `no gallery image '${id}'`);
  if (!png) throw new ApiError('not_found', `gallery image '${id}' was added without its picture (an older add)`);
  res.set({ 'content-type': 'image/png', 'cache-control': 'no-cache' }).send(png);
}
