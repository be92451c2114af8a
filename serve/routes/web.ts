/**
 * The explorer page (serve/web/): index.html, app.css and app.js, the last compiled from app.ts by
 * esbuild once, in memory, when first asked for. Everything comes from this origin, under a
 * Content-Security-Policy that allows nothing else.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Request, Response } from 'express';
import { build } from 'esbuild';

const DIR = join(import.meta.dirname, '../web');

export const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' blob: data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

let script: Promise<string> | null = null;

function compiled(): Promise<string> {
  script ??= build({
    entryPoints: [join(DIR, 'app.ts')],
    bundle: true,
    format: 'esm',
    target: 'es2022',
    write: false,
    minify: true,
    logLevel: 'silent',
  }).then((r) => r.outputFiles[0].text);
  return script;
}

const send = (res: Response, type: string, body: string) =>
  res
    .set({
      'content-type': type,
      'content-security-policy': CSP,
      'x-content-type-options': 'nosniff',
      'cache-control': 'no-cache',
    })
    .send(body);

/** A file of the page, read once, when first asked for, like the compiled script. */
function once(name: string): () => string {
  let text: string | undefined;
  return () => (text ??= readFileSync(join(DIR, name), 'utf8'));
}
const html = once('index.html');
const css = once('app.css');

export async function page(_req: Request, res: Response): Promise<void> {
  send(res, 'text/html; charset=utf-8', html());
}

export async function styles(_req: Request, res: Response): Promise<void> {
  send(res, 'text/css; charset=utf-8', css());
}

export async function app(_req: Request, res: Response): Promise<void> {
  send(res, 'text/javascript; charset=utf-8', await compiled());
}
