/** Express wiring only: body parsers, routes, metrics, and the one error table. */
import { createHash, timingSafeEqual } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import express, { type NextFunction, type Request, type Response } from 'express';
import multer from 'multer';
import { ApiError, fromLayer } from './errors.ts';
import type { Service } from './service.ts';
import { classify, embeddings } from './routes/embed.ts';
import {
  addToGallery,
  deleteFromGallery,
  galleryImage,
  getFromGallery,
  listGallery,
  search,
} from './routes/gallery.ts';
import { galleryMap, reconstruct } from './routes/explore.ts';
import { app as appScript, page, styles } from './routes/web.ts';
import { openapi } from './openapi.ts';

type Handler = (svc: Service, req: Request, res: Response, signal: AbortSignal) => Promise<void>;

/** The largest body a request may send: a raw image, or a JSON or multipart body (inflated). */
export function bodyLimit(req: { headers: Request['headers'] }, o: Service['options']): number {
  return (req.headers['content-type'] ?? '').toLowerCase().startsWith('image/') ? o.maxBytes : o.maxRequestBytes;
}

/** A body whose declared length is over its limit: refused before a byte of it is read. */
export function declaredTooLarge(req: { headers: Request['headers'] }, o: Service['options']): boolean {
  return Number(req.headers['content-length'] ?? 0) > bodyLimit(req, o);
}

export function createApp(svc: Service, log: (msg: string) => void = () => {}): express.Express {
  const app = express();
  app.disable('x-powered-by');
  const o = svc.options;

  app.use((req, res, next) => {
    // Answers are only ever what their content-type says, never sniffed into HTML.
    res.set('x-content-type-options', 'nosniff');
    // By method on a matched route (the routes bound the methods); one series for anything unmatched.
    res.on('finish', () => {
      const status = String(res.statusCode);
      svc.metrics.requests.inc(
        req.route ? { method: req.method, route: req.route.path, status } : { route: 'unmatched', status },
      );
    });
    next();
  });
  // While shutting down, requests still arriving on open connections are refused. A client that
  // goes away aborts its request's work (`signal`).
  app.use((_req, res, next) => {
    if (svc.draining) throw new ApiError('not_ready', 'the server is shutting down', 1);
    const aborted = new AbortController();
    // Every image of a request listens on it, waiting to decode and waiting for inference, and
    // so does a gallery query waiting its turn: at most that many listeners, none of them a leak.
    setMaxListeners(2 * o.maxImages + 1, aborted.signal);
    res.locals.signal = aborted.signal;
    res.on('close', () => {
      // The reason is what work that stops on the signal throws (a search between its slices).
      if (!res.writableFinished) aborted.abort(new ApiError('client_closed', 'the client closed the request'));
    });
    next();
  });
  // Admission on the routes that take a body, before a byte of it is read: refused when its
  // declared length is over its limit, or when the bodies being received already fill their
  // budget (a chunked body counts as its limit).
  let inflightBytes = 0;
  const admit = (req: Request, res: Response, next: NextFunction) => {
    const limit = bodyLimit(req, o);
    if (declaredTooLarge(req, o)) throw tooLarge(limit);
    const chunked = (req.headers['transfer-encoding'] ?? '').length > 0;
    const reserve = chunked ? limit : Number(req.headers['content-length'] ?? 0);
    if (reserve > 0 && inflightBytes + reserve > o.maxInflightBytes) {
      throw new ApiError('overloaded', `server busy: ${inflightBytes} bytes of request bodies are being received`, 1);
    }
    inflightBytes += reserve;
    res.on('close', () => {
      inflightBytes -= reserve;
    });
    next();
  };
  // Bodies are parsed per route, after the API key where there is one: an unknown route or an
  // unauthorised client costs no body read, and parser errors are counted under their route.
  // body-parser refuses a declared content-length over its limit before reading.
  const raw = express.raw({ type: 'image/*', limit: o.maxBytes });
  // The limit counts inflated bytes, so a small gzip body cannot expand past it. It must stay far
  // below V8's longest string (~512 MiB): body-parser turns the whole body into one string.
  const json = express.json({ limit: o.maxRequestBytes });
  const upload = multer({
    storage: multer.memoryStorage(),
    limits: { fileSize: o.maxBytes, files: o.maxImages, fields: 16, fieldSize: 1024 },
  }).any();
  const multipart = (req: Request, res: Response, next: NextFunction) => {
    if (!(req.headers['content-type'] ?? '').toLowerCase().startsWith('multipart/form-data')) return next();
    // A chunked body has no content-length to check up front, so count what arrives.
    let seen = 0;
    let done = false;
    const finish = (err?: unknown) => {
      if (done) return;
      done = true;
      req.off('data', count);
      next(err);
    };
    const count = (chunk: Buffer) => {
      seen += chunk.length;
      if (seen <= o.maxRequestBytes) return;
      req.unpipe();
      req.resume();
      finish(tooLarge(o.maxRequestBytes));
    };
    req.on('data', count);
    // Whatever multer or busboy throws is about the client's body.
    upload(req, res, (err?: unknown) => finish(err ? multipartError(err) : undefined));
  };

  const body = [raw, json, multipart];

  const route = (h: Handler) => async (req: Request, res: Response) => {
    if (!svc.ready) throw new ApiError('not_ready', 'the model is not loaded yet', 1);
    await svc.handle(() => h(svc, req, res, res.locals.signal as AbortSignal));
  };

  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  // Ready is the model's: a gallery whose database is out of reach fails its own routes (503) while
  // embeddings and classify go on, so it is reported beside readiness rather than withdrawing it.
  app.get('/readyz', async (_req, res) => {
    const gallery = svc.gallery && (await svc.gallery.health());
    res
      .status(svc.ready ? 200 : 503)
      .json({ ready: svc.ready, model: svc.manifest.id, ...(gallery ? { gallery } : {}) });
  });
  app.get('/metrics', async (_req, res) => {
    res.set('content-type', svc.metrics.registry.contentType).send(await svc.metrics.registry.metrics());
  });
  app.get('/v1/models', (_req, res) => {
    res.json({
      data: [
        {
          ...svc.manifest,
          probe: svc.probe ? { classes: svc.probe.classes, metrics: svc.probe.metrics } : null,
          // What this server does with the model, for clients such as the explorer page.
          server: { gallery: Boolean(svc.gallery), apiKey: Boolean(o.apiKey), reconstruct: Boolean(svc.predictor) },
        },
      ],
    });
  });
  app.get('/openapi.json', (_req, res) => {
    res.json(openapi(svc));
  });
  const apiKey = (req: Request, _res: Response, next: NextFunction) => {
    const key = o.apiKey;
    if (!key) return next();
    const bearer = /^Bearer +(.+)$/i.exec(req.headers.authorization ?? '')?.[1];
    if (!keyMatches(req.headers['x-api-key'] ?? bearer, key))
      throw new ApiError(
        'unauthorized',
        "this route needs the server's API key (x-api-key: <key>, or Authorization: Bearer <key>)",
      );
    next();
  };
  app.post('/v1/embeddings', admit, body, route(embeddings));
  app.post('/v1/classify', admit, body, route(classify));
  app.post('/v1/gallery', admit, apiKey, raw, json, route(addToGallery));
  // Ids may hold '/' (`ijepa index` names images by their path), so the id is the rest of the path.
  app.get('/v1/gallery/*id', route(getFromGallery));
  app.delete('/v1/gallery/*id', apiKey, route(deleteFromGallery));
  app.post('/v1/search', admit, body, route(search));
  app.post('/v1/reconstruct', admit, body, route(reconstruct));
  app.get('/v1/gallery', route(listGallery));
  app.get('/v1/images/*id', route(galleryImage));
  app.get('/v1/map', route(galleryMap));
  // The explorer page.
  app.get('/', page);
  app.get('/app.css', styles);
  app.get('/app.js', appScript);

  app.use((req: Request) => {
    throw new ApiError('not_found', `no route ${req.method} ${req.path}`);
  });
  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const e = toApiError(err);
    if (e.code === 'internal') log(`internal error: ${(err as Error)?.stack ?? String(err)}`);
    if (e.retryAfter) res.set('retry-after', String(e.retryAfter));
    // An answer before the body was read (refused, unauthorised): close the connection rather
    // than let Node read and discard the rest of a body that may be a gigabyte. A request without
    // a body keeps it: its parser may not have marked it complete yet (an answer in the same tick).
    if ((!req.complete && hasBody(req)) || svc.draining) res.set('connection', 'close');
    res.status(e.status).json(e.toJSON());
  });
  return app;
}

/**
 * Whether a client's key is the server's, in a time that does not depend on where they differ:
 * their digests are compared, which have one length whatever the key's.
 */
export function keyMatches(given: string | string[] | undefined, key: string): boolean {
  if (typeof given !== 'string') return false;
  const digest = (s: string) => createHash('sha256').update(s).digest();
  return timingSafeEqual(digest(given), digest(key));
}

function hasBody(req: Request): boolean {
  return req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;
}

function tooLarge(limit: number): ApiError {
  return new ApiError('payload_too_large', `request body is larger than ${limit} bytes`);
}

function multipartError(err: unknown): ApiError {
  const e = err as { code?: string; message?: string };
  if (e?.code === 'LIMIT_FILE_SIZE')
    return new ApiError('payload_too_large', 'an uploaded image is larger than the byte limit');
  return new ApiError('bad_request', `multipart body: ${e?.message ?? String(err)}`);
}

/** Errors from body parsers become API errors; anything else is internal. */
function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  const below = fromLayer(err);
  if (below) return below;
  const e = err as { type?: string; code?: string; message?: string; status?: number };
  if (e?.type === 'entity.too.large')
    return new ApiError(
      'payload_too_large',
      `request body is larger than ${(e as { limit?: number }).limit ?? 'the limit of'} bytes`,
    );
  if (e?.type === 'entity.parse.failed')
    return new ApiError('invalid_json', 'request body is not a valid JSON object or array');
  if (e?.type === 'encoding.unsupported' || e?.type === 'charset.unsupported')
    return new ApiError('unsupported_media_type', e.message ?? 'unsupported encoding');
  if (typeof e?.status === 'number' && e.status >= 400 && e.status < 500)
    return new ApiError('bad_request', `request body could not be read: ${e.message ?? 'bad request'}`);
  return new ApiError('internal', 'internal error');
}
