/**
 * Untrusted image bytes → model input pixels. Limits are checked on the header before any pixel is
 * decoded (a 100-byte file can claim 50000×50000). Decoding runs in sharp's thread pool, off the
 * event loop, every decode through the server's gate.
 */
import sharp from 'sharp';
import { RuntimeError } from './errors.ts';
import { decodeRgb, resizeRgb, type Preprocess } from '../format/preprocess.ts';
import type { Gate } from './gate.ts';

export interface DecodeLimits {
  maxBytes: number;
  maxPixels: number;
  /** Longest side, in pixels. */
  maxSide: number;
  /** Longest side over shortest side. */
  maxAspect: number;
}

/** Raster formats we decode; SVG (and anything that could fetch or execute) is refused. */
const ACCEPTED = new Set(['jpeg', 'png', 'webp', 'gif', 'tiff', 'avif', 'heif']);

/**
 * What a pixel of each format costs to decode, against a PNG's (bench/decode-cost.ts measures
 * them): AVIF and HEIF decode the whole image in one call, at several times the work per pixel.
 */
const FORMAT_COST: Record<string, number> = { jpeg: 1, png: 1, gif: 1, tiff: 1, webp: 3, avif: 8, heif: 8 };
/**
 * The work of a decode apart from its pixels, in pixels' worth: each row or column of the longest
 * side (1 × 1,000,000 costs far more than its million pixels), and each decode's own setup.
 */
const SIDE_COST = 100;
const DECODE_COST = 200_000;

/** What decoding an image costs, in pixels' worth of a PNG's decode: its gate weight and its share of a request's budget. */
export function decodeCost(format: string, width: number, height: number): number {
  return width * height * (FORMAT_COST[format] ?? 8) + SIDE_COST * Math.max(width, height) + DECODE_COST;
}

export interface Inspected {
  bytes: Uint8Array;
  width: number;
  height: number;
  /** decodeCost of the image. */
  cost: number;
}

/** Checks an image on its header alone (size, format, frames, pixels, shape): nothing is decoded yet. */
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
  const long = Math.max(w, h);
  if (long > limits.maxSide)
    throw new RuntimeError(
      'image_too_large',
      `image is ${w}x${h}: its longest side is ${long} pixels; the limit is ${limits.maxSide}`,
    );
  const aspect = long / Math.min(w, h);
  if (aspect > limits.maxAspect)
    throw new RuntimeError(
      'aspect_ratio_too_large',
      `image is ${w}x${h}: its aspect ratio is ${Math.round(aspect)}:1; the limit is ${limits.maxAspect}:1`,
    );
  return { bytes, width: w, height: h, cost: decodeCost(meta.format, w, h) };
}

/**
 * Decodes an inspected image to the model's input pixels. `gate` bounds the decoding at once
 * across requests (weight: the image's cost) and serves `owner`s (requests) in turn; `signal` (the
 * client went away) drops a decode that has not started, and its resize if only the decode has.
 * sharp's own messages stay here: they name libvips internals, not what was wrong with the image.
 */
export async function decodeInspected(
  img: Inspected,
  p: Preprocess,
  gate: Gate,
  signal?: AbortSignal,
  owner?: object,
): Promise<Uint8Array> {
  return gate.run(
    img.cost,
    async () => {
      const rgb = await decodeRgb({ kind: 'encoded', data: img.bytes }).catch(() => {
        throw new RuntimeError('invalid_image', 'the image data is corrupt or truncated: it could not be decoded');
      });
      if (signal?.aborted) throw new RuntimeError('cancelled', 'the client closed the request');
      // Decoded pixels that fail to resize are the server's fault, not the image's.
      return resizeRgb(rgb, p).catch((e) => {
        throw new Error('the decoded image could not be resized to the model input', { cause: e });
      });
    },
    signal,
    owner,
  );
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
