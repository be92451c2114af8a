/** The OpenAPI 3.1 description of the HTTP API, served at /openapi.json. */
import type { Service } from './service.ts';

export function openapi(svc: Service) {
  const error = { type: 'object', required: ['error', 'code'], properties: { error: { type: 'string' }, code: { type: 'string' } } };
  const base64 = { type: 'string', contentEncoding: 'base64' };
  const options = {
    patches: { type: 'boolean' },
    dtype: { enum: ['float32', 'float16'] },
    top_k: { type: 'integer', minimum: 1, maximum: 1000 },
  };
  const searchOptions = {
    k: { type: 'integer', minimum: 1, maximum: 100 },
    box: { description: 'patch box [row0, col0, row1, col1) of the query: an array of 4 integers, or "r0,c0,r1,c1" in the query string', oneOf: [{ type: 'array', items: { type: 'integer' }, minItems: 4, maxItems: 4 }, { type: 'string' }] },
    pooled: { type: 'boolean' },
  };
  const body = (props: Record<string, unknown>) => ({
    'image/*': { schema: { type: 'string', format: 'binary' } },
    'application/json': {
      schema: {
        type: 'object',
        additionalProperties: false,
        properties: { images: { type: 'array', minItems: 1, items: { oneOf: [base64, { type: 'object', properties: { data: base64 }, required: ['data'] }] } }, image: base64, ...props },
      },
    },
    'multipart/form-data': { schema: { type: 'object', additionalProperties: { type: 'string', format: 'binary' } } },
  });
  const query = (props: Record<string, unknown>) => Object.entries(props).map(([name, schema]) => ({ name, in: 'query', required: false, schema }));
  const images = body(options);
  const id = { name: 'id', in: 'path', required: true, description: "gallery id; may contain '/'", schema: { type: 'string', pattern: '^[\\w.:@/-]{1,128}$' } };
  const item = { type: 'object', additionalProperties: false, required: ['id', 'image'], properties: { id: { type: 'string' }, image: base64, metadata: { type: 'object' } } };
  const errors = Object.fromEntries(['400', '409', '413', '415', '422', '429', '503'].map((s) => [s, { description: 'error', content: { 'application/json': { schema: error } } }]));
  return {
    openapi: '3.1.0',
    info: { title: 'ijepa feature server', version: '1', description: `Serving model ${svc.manifest.id}` },
    paths: {
      '/healthz': { get: { summary: 'process is up', responses: { 200: { description: 'ok' } } } },
      '/readyz': { get: { summary: 'model loaded and a forward pass succeeded', responses: { 200: { description: 'ready' }, 503: { description: 'not ready' } } } },
      '/metrics': { get: { summary: 'Prometheus metrics', responses: { 200: { description: 'text exposition format' } } } },
      '/v1/models': { get: { summary: 'the model package manifest', responses: { 200: { description: 'manifest' } } } },
      '/v1/embeddings': {
        post: {
          summary: 'pooled embedding per image, optionally the patch grid [rows, cols, D]; Accept: application/octet-stream for float32/float16 bytes (X-Shape, X-Dtype headers)',
          parameters: query({ patches: options.patches, dtype: options.dtype }),
          requestBody: { required: true, content: images },
          responses: { 200: { description: 'embeddings, per-image errors inline' }, ...errors },
        },
      },
      '/v1/classify': {
        post: {
          summary: 'top-k classes from the linear-probe head',
          parameters: query({ top_k: options.top_k }),
          requestBody: { required: true, content: images },
          responses: { 200: { description: 'predictions, per-image errors inline' }, ...errors },
        },
      },
      '/v1/gallery': {
        post: {
          summary: 'add images to the gallery (with --gallery; x-api-key or Bearer when the server has a key): image/* with ?id= and ?metadata=<JSON object>, or JSON {id, image, metadata} or {items: [...]}',
          parameters: query({ id: { type: 'string' }, metadata: { type: 'string', description: 'a JSON object' } }),
          requestBody: { required: true, content: { 'image/*': images['image/*'], 'application/json': { schema: { oneOf: [item, { type: 'object', required: ['items'], properties: { items: { type: 'array', minItems: 1, items: item } } }] } } } },
          responses: { 200: { description: '{added, errors, size}' }, 401: errors['400'], ...errors },
        },
      },
      '/v1/gallery/{id}': {
        get: { summary: 'one gallery entry', parameters: [id], responses: { 200: { description: 'entry' }, 404: errors['400'], 409: errors['409'] } },
        delete: { summary: 'remove one gallery entry (API key when set)', parameters: [id], responses: { 200: { description: '{deleted}' }, 401: errors['400'], 404: errors['400'], 409: errors['409'] } },
      },
      '/v1/search': {
        post: {
          summary: 'nearest gallery images to one query image by patch MaxSim (optionally within a patch box), with pooled cosine scores on request',
          parameters: query(searchOptions),
          requestBody: { required: true, content: body(searchOptions) },
          responses: { 200: { description: '{hits: [{id, score, metadata, matches}]}' }, ...errors },
        },
      },
      '/openapi.json': { get: { summary: 'this document', responses: { 200: { description: 'OpenAPI 3.1' } } } },
    },
  };
}
