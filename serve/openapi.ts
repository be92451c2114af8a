/**
 * The OpenAPI 3.1 description served at /openapi.json. Request bodies and parameters are generated
 * from the zod schemas the routes validate with, so every limit is written once.
 */
import { z } from 'zod';
import { addSchema, idSchema } from './routes/gallery.ts';
import { imagesBodySchema, optionsSchema } from './routes/inputs.ts';
import type { Service } from './service.ts';

type Option = keyof typeof optionsSchema.shape;

const schema = (s: z.ZodType) => {
  const { $schema: _, ...rest } = z.toJSONSchema(s, { io: 'input', unrepresentable: 'any' });
  return rest;
};

const query = (names: Option[]) =>
  names.map((name) => {
    const { description, ...s } = schema(optionsSchema.shape[name]) as { description?: string };
    return { name, in: 'query', required: false, description, schema: s };
  });

/** The three ways to send images, with the route's own options in the JSON form. */
function imagesBody(names: Option[]) {
  const keep = Object.fromEntries(names.map((n) => [n, true])) as Partial<Record<Option, true>>;
  const others = (Object.keys(optionsSchema.shape) as Option[]).filter((n) => !keep[n]);
  const json = imagesBodySchema.omit(Object.fromEntries(others.map((n) => [n, true])) as Record<Option, true>);
  return {
    required: true,
    content: {
      'image/*': { schema: { type: 'string', format: 'binary' } },
      'application/json': { schema: schema(json) },
      'multipart/form-data': { schema: { type: 'object', additionalProperties: { type: 'string', format: 'binary' } } },
    },
  };
}

const error = {
  type: 'object',
  required: ['error', 'code'],
  properties: { error: { type: 'string' }, code: { type: 'string' } },
};
const errors = (...codes: number[]) =>
  Object.fromEntries(
    codes.map((c) => [String(c), { description: 'error', content: { 'application/json': { schema: error } } }]),
  );
const ok = (description: string) => ({ 200: { description } });

export function openapi(svc: Service) {
  const images = [400, 413, 415, 422, 429, 503];
  const id = { name: 'id', in: 'path', required: true, schema: schema(idSchema) };
  return {
    openapi: '3.1.0',
    info: { title: 'ijepa feature server', version: '1', description: `Serving model ${svc.manifest.id}` },
    paths: {
      '/healthz': { get: { summary: 'process is up', responses: ok('ok') } },
      '/readyz': {
        get: {
          summary:
            'model loaded and a forward pass succeeded; with a gallery, whether it can be reached (gallery: ok | unavailable)',
          responses: { ...ok('ready'), 503: { description: 'not ready' } },
        },
      },
      '/metrics': { get: { summary: 'Prometheus metrics', responses: ok('text exposition format') } },
      '/v1/models': { get: { summary: 'the model package manifest', responses: ok('manifest') } },
      '/v1/embeddings': {
        post: {
          summary:
            'pooled embedding per image, optionally the patch grid; encoding=base64 for base64 float32/float16 values per image, Accept: application/octet-stream for float32/float16 bytes (X-Shape, X-Dtype headers)',
          parameters: query(['patches', 'dtype', 'encoding']),
          requestBody: imagesBody(['patches', 'dtype', 'encoding']),
          responses: { ...ok('embeddings, per-image errors inline'), ...errors(...images) },
        },
      },
      '/v1/classify': {
        post: {
          summary: 'top-k classes from the linear-probe head',
          parameters: query(['top_k']),
          requestBody: imagesBody(['top_k']),
          responses: { ...ok('predictions, per-image errors inline'), ...errors(...images, 409) },
        },
      },
      '/v1/gallery': {
        get: {
          summary: 'the gallery images in the order they were added, a page at a time',
          parameters: [
            {
              name: 'offset',
              in: 'query',
              required: false,
              schema: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER },
            },
            { name: 'limit', in: 'query', required: false, schema: { type: 'integer', minimum: 1, maximum: 200 } },
          ],
          responses: {
            ...ok('{total, offset, limit, items: [{id, metadata, patches, grid, addedAt, image}]}'),
            ...errors(400, 409, 503),
          },
        },
        post: {
          summary:
            'add images to the gallery (x-api-key or Bearer when the server has a key): image/* with ?id= and ?metadata=<JSON object>, or JSON',
          parameters: [
            { name: 'id', in: 'query', required: false, schema: schema(idSchema) },
            {
              name: 'metadata',
              in: 'query',
              required: false,
              description: 'a JSON object',
              schema: { type: 'string' },
            },
          ],
          requestBody: {
            required: true,
            content: {
              'image/*': { schema: { type: 'string', format: 'binary' } },
              'application/json': { schema: schema(addSchema) },
            },
          },
          responses: { ...ok('{added, errors, size}'), ...errors(...images, 401, 409, 507) },
        },
      },
      '/v1/gallery/{id}': {
        get: {
          summary: 'one gallery entry',
          parameters: [id],
          responses: { ...ok('entry'), ...errors(404, 409, 503) },
        },
        delete: {
          summary: 'remove one gallery entry (API key when set)',
          parameters: [id],
          responses: { ...ok('{deleted}'), ...errors(401, 404, 409, 503, 507) },
        },
      },
      '/v1/search': {
        post: {
          summary:
            'nearest gallery images to one query image by patch MaxSim (optionally within a patch box), with pooled cosine scores on request',
          parameters: query(['k', 'box', 'pooled']),
          requestBody: imagesBody(['k', 'box', 'pooled']),
          responses: { ...ok('{hits: [{id, score, metadata, matches}]}'), ...errors(...images, 409) },
        },
      },
      '/v1/reconstruct': {
        post: {
          summary:
            'one image and a box of patches to hide: for each hidden patch, the gallery patches nearest to the embedding the predictor expects there from the visible ones (409 without a predictor or a gallery)',
          parameters: query(['box', 'neighbours']),
          requestBody: imagesBody(['box', 'neighbours']),
          responses: {
            ...ok('{grid, box, patches: [{position, neighbours: [{id, patch, similarity}]}]}'),
            ...errors(...images, 409),
          },
        },
      },
      '/v1/images/{id}': {
        get: {
          summary: 'the stored picture of a gallery image, as the model saw it (PNG)',
          parameters: [id],
          responses: { 200: { description: 'image/png' }, ...errors(404, 409, 503) },
        },
      },
      '/v1/map': {
        get: {
          summary:
            "the gallery's pooled embeddings in 2-D (UMAP, seeded), with labels from metadata label/class/category; while the gallery's next layout is made, the previous one is answered (its version below galleryVersion)",
          responses: { ...ok('{version, galleryVersion, total, points: [{id, x, y, label}]}'), ...errors(409, 503) },
        },
      },
      '/': { get: { summary: 'the explorer page', responses: ok('text/html') } },
      '/app.js': { get: { summary: "the explorer page's script", responses: ok('text/javascript') } },
      '/app.css': { get: { summary: "the explorer page's styles", responses: ok('text/css') } },
      '/openapi.json': { get: { summary: 'this document', responses: ok('OpenAPI 3.1') } },
    },
  };
}
