/**
 * Untrusted image bytes → model input pixels. Limits are checked on the header before any pixel is
 * decoded (a 100-byte file can claim 50000×50000). Decoding runs in sharp's thread pool, off the
 * event loop.
 */
import sharp from 'sharp';
import { RuntimeError } from './errors.ts';
import { toRgb, type Preprocess } from '../format/preprocess.ts';
import type { Gate } from './gate.ts';

export interface DecodeLimits {
  maxBytes: number;
  maxPixels: number;
}

/** Raster formats we decode; SVG (and anything that could fetch or execute) is refused. */
const ACCEPTED = new Set(['jpeg', 'png', 'webp', 'gif', 'tiff', 'avif', 'heif']);

/**
 * Images up to a megapixel (3 MB of RGB) skip the gate: they cannot add up to much, and they
 * should not wait behind a queue of 36-megapixel ones (docs/api.md, "Limits and batching").
 */
const UNGATED_PIXELS = 1_000_000;

export interface Inspected {
  bytes: Uint8Array;
  width: number;
  height: number;
}

/** Checks an image on its header alone (size, format, frames, pixels): nothing is decoded yet. */
export async function inspectImage(bytes: Uint8Array, limits: DecodeLimits): Promise<Inspected> {
  if (bytes.length === 0) throw new RuntimeError('invalid_image', 'empty image (0 bytes)');
  if (bytes.length > limits.maxBytes)
    throw new RuntimeError('too_many_bytes', `image is ${bytes.length} bytes; the limit is ${limits.maxBytes}`);
  let meta: Awaited<ReturnType<ReturnType<typeof sharp>['metadata']>>;
  try {
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch {
    throw new RuntimeError('invalid_image', 'not a decodable image');
  }
  if (!meta.format || !ACCEPTED.has(meta.format)) {
    throw new RuntimeError(
      'unsupported_format',
      `image format '${meta.format ?? 'unknown'}' is not accepted (jpeg, png, webp, gif, tiff, avif, heif)`,
    );
  }
  if ((meta.pages ?? 1) > 1)
    throw new RuntimeError('animated_image', `image has ${meta.pages} frames; send a single frame`);
  const w = meta.width ?? 0;
  const h = meta.height ?? 0;
  if (!w || !h) throw new RuntimeError('invalid_image', 'image has no dimensions');
  if (w * h > limits.maxPixels)
    throw new RuntimeError('image_too_large', `image is ${w}x${h} = ${w * h} pixels; the limit is ${limits.maxPixels}`);
  return { bytes, width: w, height: h };
}

/**
 * Decodes an inspected image to the model's input pixels. `gate` bounds the pixels decoded at
 * once across requests (weight: the image's pixel count); `signal` (the client went away) drops a
 * decode that has not started.
 */
export async function decodeInspected(
  img: Inspected,
  p: Preprocess,
  gate: Gate,
  signal?: AbortSignal,
): Promise<Uint8Array> {
  const pixels = img.width * img.height;
  const decode = async () => {
    if (signal?.aborted) throw new RuntimeError('cancelled', 'the client closed the request');
    try {
      return await toRgb({ kind: 'encoded', data: img.bytes }, p);
    } catch (e) {
      throw new RuntimeError('invalid_image', `image could not be decoded: ${(e as Error).message.split('\n')[0]}`);
    }
  };
  return pixels <= UNGATED_PIXELS ? decode() : gate.run(pixels, decode, signal);
}

/** inspectImage, then decodeInspected. */
export async function decodeImage(
  bytes: Uint8Array,
  limits: DecodeLimits,
  p: Preprocess,
  gate: Gate,
): Promise<Uint8Array> {
  return decodeInspected(await inspectImage(bytes, limits), p, gate);
}
