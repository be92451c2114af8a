/** Starting and draining the server. */
import { createServer, type Server } from 'node:http';
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
  // Not app.listen: Express 5 calls its callback on errors too, so a busy port looked like success.
  const server = createServer(app);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => {
      server.off('error', reject);
      resolve();
    });
  }).catch(async (e: NodeJS.ErrnoException) => {
    await service.close();
    throw new Error(
      e.code === 'EADDRINUSE'
        ? `port ${o.port} on ${o.host} is already in use`
        : `cannot listen on ${o.host}:${o.port}: ${e.message}`,
    );
  });
  const addr = server.address();
  log.info(
    { model: service.manifest.id, address: typeof addr === 'object' && addr ? `${addr.address}:${addr.port}` : addr },
    'serving',
  );
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
