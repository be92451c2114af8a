/** Starting and draining the server. */
import type { Server } from 'node:http';
import pino from 'pino';
import { createApp } from './app.ts';
import { Service, type ServiceOptions } from './service.ts';

export interface ServeOptions extends Partial<ServiceOptions> {
  model: string;
  port: number;
  host: string;
}

export async function serve(o: ServeOptions): Promise<{ server: Server; service: Service; close(): Promise<void> }> {
  const log = pino({ name: 'ijepa' }, pino.destination(2));
  const service = await Service.open(o.model, o);
  const app = createApp(service, (m) => log.error(m));
  const server = await new Promise<Server>((resolve, reject) => {
    const s = app.listen(o.port, o.host, () => resolve(s));
    s.once('error', reject);
  });
  const addr = server.address();
  log.info({ model: service.manifest.id, address: typeof addr === 'object' && addr ? `${addr.address}:${addr.port}` : addr }, 'serving');
  let closing: Promise<void> | null = null;
  const close = () =>
    (closing ??= (async () => {
      // Stop accepting, let in-flight requests finish (their batches drain), then release the model.
      log.info('draining');
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await service.close();
      log.info('stopped');
    })());
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => void close().then(() => process.exit(0)));
  return { server, service, close };
}
