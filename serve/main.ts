/** Starting and stopping the server. */
import { createServer, type Server } from 'node:http';
import pino from 'pino';
import { createApp, declaredTooLarge } from './app.ts';
import { Service, type ServiceOptions } from './service.ts';

export interface ServeOptions extends Partial<ServiceOptions> {
  model: string;
  port: number;
  host: string;
  /** Seconds in-flight requests get to finish after SIGTERM before their connections are closed. */
  drainTimeout?: number;
  /** Serve a writable gallery without an API key on an address other than loopback. */
  allowUnauthenticatedWrites?: boolean;
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/;

/** Who could change the gallery: refused configurations, before anything is loaded. */
export function checkAccess(o: ServeOptions): void {
  if (o.apiKey === '') {
    throw new Error('the API key is empty (--api-key or IJEPA_API_KEY): give a key, or leave both unset');
  }
  if (o.gallery && !o.apiKey && !LOOPBACK.test(o.host) && !o.allowUnauthenticatedWrites) {
    throw new Error(
      `refusing to serve a writable gallery on ${o.host} without an API key: anyone who can reach it could add and delete images. ` +
        'Set --api-key (or IJEPA_API_KEY), bind to 127.0.0.1, or pass --allow-unauthenticated-writes',
    );
  }
}

export async function serve(o: ServeOptions): Promise<{ server: Server; service: Service; close(): Promise<void> }> {
  checkAccess(o);
  const log = pino({ name: 'ijepa' }, pino.destination(2));
  // Under a file-size limit (ulimit -f) a write past it raises SIGXFSZ, which would kill the
  // server; ignored, the write fails with EFBIG and the gallery handles it like a full disk.
  process.on('SIGXFSZ', () => {});
  const service = await Service.open(o.model, o);
  const app = createApp(service, (m) => log.error(m));
  // Not app.listen: Express 5 calls its callback on errors too, so a busy port looked like success.
  const server = createServer(app);
  // `Expect: 100-continue` is answered by the app's refusal when the declared body is too large,
  // instead of Node's automatic "100 Continue".
  server.on('checkContinue', (req, res) => {
    if (!declaredTooLarge(req, service.options)) res.writeContinue();
    app(req, res);
  });
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
  const grace = (o.drainTimeout ?? 8) * 1000;
  let closing: Promise<void> | null = null;
  const close = () =>
    (closing ??= (async () => {
      // Stop accepting; idle keep-alive connections close now, requests still arriving on busy
      // ones are refused, in-flight ones get `grace` to finish; then every connection closes,
      // their work is cancelled, and the gallery is snapshotted.
      log.info('draining');
      const t0 = performance.now();
      service.draining = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const force = setTimeout(() => server.closeAllConnections(), grace);
      await closed;
      clearTimeout(force);
      await service.settled(2000);
      await service.close();
      log.info({ seconds: ((performance.now() - t0) / 1000).toFixed(2) }, 'stopped');
    })());
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => void close().then(() => process.exit(0)));
  return { server, service, close };
}
