/** The OpenAPI 3.1 description of the HTTP API, served at /openapi.json. */
import type { Service } from './service.ts';

export function openapi(svc: Service) {
  const error = { type: 'object', required: ['error', 'code'], properties: { error: { type: 'string' }, code: { type: 'string' } } };
  const images = {
    'image/*': { schema: { type: 'string', format: 'binary' } },
    'application/json': {
      schema: {
        type: 'object',
        properties: {
          images: { type: 'array', items: { type: 'string', contentEncoding: 'base64' } },
          image: { type: 'string', contentEncoding: 'base64' },
          patches: { type: 'boolean' },
          dtype: { enum: ['float32', 'float16'] },
          top_k: { type: 'integer', minimum: 1 },
        },
      },
    },
    'multipart/form-data': { schema: { type: 'object', additionalProperties: { type: 'string', format: 'binary' } } },
  };
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
          parameters: ['patches', 'dtype'].map((name) => ({ name, in: 'query', required: false, schema: { type: 'string' } })),
          requestBody: { required: true, content: images },
          responses: { 200: { description: 'embeddings, per-image errors inline' }, ...errors },
        },
      },
      '/v1/classify': {
        post: {
          summary: 'top-k classes from the linear-probe head',
          parameters: [{ name: 'top_k', in: 'query', required: false, schema: { type: 'integer' } }],
          requestBody: { required: true, content: images },
          responses: { 200: { description: 'predictions, per-image errors inline' }, ...errors },
        },
      },
    },
  };
}
