/** Prometheus metrics (prom-client), one registry per server. */
import client from 'prom-client';

export function createMetrics() {
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry });
  const requests = new client.Counter({
    name: 'ijepa_http_requests_total',
    help: 'HTTP requests by method, route and status (no method for unmatched requests)',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [registry],
  });
  const stage = new client.Histogram({
    name: 'ijepa_stage_seconds',
    help: 'Latency of a processing stage',
    labelNames: ['stage'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });
  const batchSize = new client.Histogram({
    name: 'ijepa_batch_size',
    help: 'Images per encoder run',
    buckets: [1, 2, 4, 8, 16, 32, 64, 128],
    registers: [registry],
  });
  const queue = new client.Gauge({
    name: 'ijepa_queue_images',
    help: 'Images waiting for the encoder',
    registers: [registry],
  });
  const cancelled = new client.Counter({
    name: 'ijepa_cancelled_images_total',
    help: 'Images whose decoding or inference was dropped because their client went away',
    registers: [registry],
  });
  return { registry, requests, stage, batchSize, queue, cancelled };
}

export type Metrics = ReturnType<typeof createMetrics>;
