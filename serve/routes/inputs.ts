/**
 * Images from a request, in any of three forms: a raw `image/*` body (one image), JSON with base64
 * strings, or multipart/form-data (one image per file part). Options come from the JSON body, the
 * form fields or the query string. Each image keeps its own error so one bad image does not fail
 * a batch.
 */
import type { Request } from 'express';
import { z } from 'zod';
import { ApiError } from '../errors.ts';

export interface ImageInput {
  index: number;
  bytes?: Uint8Array;
  error?: ApiError;
}

export interface RequestOptions {
  patches: boolean;
  dtype: 'float32' | 'float16';
  /** Embedding values in a JSON answer: numbers, or base64 of their little-endian `dtype` bytes. */
  encoding: 'json' | 'base64';
  topK: number;
  /** Search: hits to return, an optional patch box [row0, col0, row1, col1) and pooled scores. */
  k: number;
  box?: Box;
  pooled: boolean;
  /** Reconstruct: gallery patches per hidden patch. */
  neighbours: number;
}

export type Box = [number, number, number, number];

/** A patch box [row0, col0, row1, col1) that lies inside the rows × cols grid, or a 400. */
export function checkBox(box: Box, rows: number, cols: number): Box {
  const [r0, c0, r1, c1] = box;
  if (!(r0 >= 0 && c0 >= 0 && r1 <= rows && c1 <= cols && r0 < r1 && c0 < c1)) {
    throw new ApiError(
      'bad_request',
      `box must satisfy 0 <= row0 < row1 <= ${rows} and 0 <= col0 < col1 <= ${cols} (patch grid units)`,
    );
  }
  return box;
}

export interface ParsedImages {
  items: ImageInput[];
  /** One raw image: its error is the request's error. */
  single: boolean;
  options: RequestOptions;
}

const bool = z.union([z.boolean(), z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1')]);
const box = z.union([
  z.tuple([z.number().int(), z.number().int(), z.number().int(), z.number().int()]),
  z
    .string()
    .regex(/^\d+,\d+,\d+,\d+$/)
    .transform((s) => s.split(',').map(Number) as [number, number, number, number]),
]);
/** A JSON integer or a string of decimal digits (Number() would also take '0x3', '1e2' and ''). */
const count = (max: number) => {
  const n = z.number().int().min(1).max(max);
  return z.union([n, z.string().regex(/^\d+$/, 'must be a decimal integer').transform(Number).pipe(n)]);
};

/** Request options, from the query string, the JSON body or form fields; /openapi.json is generated from these. */
export const optionsSchema = z.object({
  patches: bool.optional().describe('also return the patch grid [rows, cols, D]'),
  dtype: z
    .enum(['float32', 'float16'])
    .optional()
    .describe('element type of an application/octet-stream answer, or of encoding=base64'),
  encoding: z
    .enum(['json', 'base64'])
    .optional()
    .describe(
      'embeddings in a JSON answer as arrays of numbers (json, the default) or, per image, base64 of their little-endian dtype bytes (base64)',
    ),
  top_k: count(1000).optional().describe('classes to return (default 5)'),
  k: count(100).optional().describe('gallery images to return (default 10)'),
  neighbours: count(16).optional().describe('gallery patches per hidden patch (default 1)'),
  box: box
    .optional()
    .describe(
      'patch box [row0, col0, row1, col1) of the query in grid units: 4 integers, or "r0,c0,r1,c1" in the query string',
    ),
  pooled: bool.optional().describe('also score hits by pooled-embedding cosine'),
});

const base64 = z.string().describe('base64 (a data: URL prefix is allowed)');

export const imagesBodySchema = optionsSchema
  .extend({
    images: z
      .array(z.union([base64, z.object({ data: base64 }).strict()]))
      .min(1)
      .optional(),
    image: base64.optional(),
  })
  .strict();

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

export function fromBase64(s: string, index: number): ImageInput {
  const body = s.replace(/^data:[^,]*;base64,/, '').replace(/\s+/g, '');
  if (body.length === 0 || body.length % 4 === 1 || !BASE64.test(body)) {
    return { index, error: new ApiError('invalid_base64', `image ${index} is not valid base64`) };
  }
  return { index, bytes: new Uint8Array(Buffer.from(body, 'base64')) };
}

function options(...sources: unknown[]): RequestOptions {
  // No prototype: a source's own `__proto__` key (a form field `__proto__[patches]`) stays a plain key.
  const merged: Record<string, unknown> = Object.create(null);
  for (const s of sources) if (s && typeof s === 'object') Object.assign(merged, s);
  const parsed = optionsSchema.safeParse({
    patches: merged.patches,
    dtype: merged.dtype,
    encoding: merged.encoding,
    top_k: merged.top_k,
    k: merged.k,
    box: merged.box,
    pooled: merged.pooled,
    neighbours: merged.neighbours,
  });
  if (!parsed.success)
    throw new ApiError(
      'bad_request',
      `bad option: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
    );
  const d = parsed.data;
  return {
    patches: d.patches ?? false,
    dtype: d.dtype ?? 'float32',
    encoding: d.encoding ?? 'json',
    topK: d.top_k ?? 5,
    k: d.k ?? 10,
    box: d.box,
    pooled: d.pooled ?? false,
    neighbours: d.neighbours ?? 1,
  };
}

export function parseImages(req: Request, maxImages: number): ParsedImages {
  const type = (req.headers['content-type'] ?? '').toLowerCase();
  let items: ImageInput[];
  let single = false;
  let opts: RequestOptions;
  if (type.startsWith('image/')) {
    if (!Buffer.isBuffer(req.body)) throw new ApiError('invalid_image', 'empty image body');
    items = [{ index: 0, bytes: new Uint8Array(req.body) }];
    single = true;
    opts = options(req.query);
  } else if (type.startsWith('application/json')) {
    const parsed = imagesBodySchema.safeParse(req.body);
    if (!parsed.success)
      throw new ApiError(
        'bad_request',
        `invalid request body: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`).join('; ')}`,
      );
    const list = parsed.data.images ?? (parsed.data.image !== undefined ? [parsed.data.image] : []);
    if (list.length === 0) throw new ApiError('no_images', 'send "images": [base64, …] or "image": base64');
    if (list.length > maxImages)
      throw new ApiError('bad_request', `${list.length} images in one request; the limit is ${maxImages}`);
    items = list.map((s, i) => fromBase64(typeof s === 'string' ? s : s.data, i));
    single = parsed.data.image !== undefined && !parsed.data.images;
    opts = options(req.query, parsed.data);
  } else if (type.startsWith('multipart/form-data')) {
    const files = (req.files as Express.Multer.File[] | undefined) ?? [];
    if (files.length === 0) throw new ApiError('no_images', 'multipart body has no file parts');
    items = files.map((f, i) => ({ index: i, bytes: new Uint8Array(f.buffer) }));
    opts = options(req.query, req.body);
  } else {
    throw new ApiError(
      'unsupported_media_type',
      `content-type '${type || '(none)'}' is not accepted: use image/*, application/json or multipart/form-data`,
    );
  }
  return { items, single, options: opts };
}
