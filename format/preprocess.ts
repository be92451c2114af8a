/**
 * Pixels in, model input out: the one preprocessing path shared by the trainer and the server, so
 * both halves see identical pixels. Decoding goes through sharp: EXIF orientation applied, alpha
 * flattened onto white, any colourspace or bit depth converted to 8-bit sRGB.
 */
import sharp from 'sharp';
import { z } from 'zod';

export const preprocessSchema = z
  .object({
    size: z.number().int().positive(),
    mean: z.tuple([z.number(), z.number(), z.number()]),
    std: z.tuple([z.number().positive(), z.number().positive(), z.number().positive()]),
    /** `squash`: resize to size×size ignoring aspect; `center-crop`: shorter side to size, then centre crop. */
    resize: z.enum(['squash', 'center-crop']),
  })
  .strict();

export type Preprocess = z.infer<typeof preprocessSchema>;

export const IMAGENET_MEAN: [number, number, number] = [0.485, 0.456, 0.406];
export const IMAGENET_STD: [number, number, number] = [0.229, 0.224, 0.225];

export function defaultPreprocess(size: number): Preprocess {
  return { size, mean: IMAGENET_MEAN, std: IMAGENET_STD, resize: 'squash' };
}

/** An image before preprocessing: encoded bytes (any format sharp reads) or raw 8-bit pixels. */
export type ImageSource =
  | { kind: 'encoded'; data: Uint8Array }
  | { kind: 'raw'; data: Uint8Array; width: number; height: number; channels: 1 | 3 };

/** A crop in source pixels (training augmentation), applied before the resize. */
export interface Crop {
  left: number;
  top: number;
  width: number;
  height: number;
}

export interface RgbImage {
  data: Uint8Array;
  width: number;
  height: number;
}

/** Decode to 8-bit sRGB at source resolution: EXIF rotation, alpha onto white, grayscale/CMYK/16-bit converted. */
export async function decodeRgb(src: ImageSource): Promise<RgbImage> {
  if (src.kind === 'raw') {
    if (src.channels === 3) return { data: src.data, width: src.width, height: src.height };
    const rgb = new Uint8Array(src.data.length * 3);
    for (let i = 0; i < src.data.length; i++) rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = src.data[i];
    return { data: rgb, width: src.width, height: src.height };
  }
  const { data, info } = await sharp(src.data, { failOn: 'truncated' })
    .rotate()
    .flatten({ background: '#ffffff' })
    .toColourspace('srgb')
    .raw({ depth: 'uchar' })
    .toBuffer({ resolveWithObject: true });
  if (info.channels !== 3) throw new Error(`decoded image has ${info.channels} channels, expected 3`);
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height };
}

/** (Crop,) then resize decoded RGB to p.size × p.size: 8-bit RGB, row-major HWC. */
export async function resizeRgb(img: RgbImage, p: Preprocess, crop?: Crop): Promise<Uint8Array> {
  if (!crop && img.width === p.size && img.height === p.size) return img.data;
  let s = sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } });
  if (crop) s = s.extract(crop);
  const { data, info } = await s
    .resize(p.size, p.size, { fit: p.resize === 'squash' ? 'fill' : 'cover', position: 'centre', kernel: 'cubic' })
    .raw({ depth: 'uchar' })
    .toBuffer({ resolveWithObject: true });
  if (info.channels !== 3 || info.width !== p.size || info.height !== p.size) {
    throw new Error(
      `preprocess produced ${info.width}x${info.height}x${info.channels}, expected ${p.size}x${p.size}x3`,
    );
  }
  return new Uint8Array(data.buffer, data.byteOffset, data.length);
}

/** Decode and resize without augmentation (what the server does). */
export async function toRgb(src: ImageSource, p: Preprocess): Promise<Uint8Array> {
  return resizeRgb(await decodeRgb(src), p);
}

/** RGB HWC bytes → normalised float CHW, written into `out` at `offset`. */
export function normalizeChw(rgb: Uint8Array, p: Preprocess, out: Float32Array, offset = 0): void {
  const plane = p.size * p.size;
  for (let c = 0; c < 3; c++) {
    const scale = 1 / (255 * p.std[c]);
    const shift = p.mean[c] / p.std[c];
    for (let i = 0; i < plane; i++) out[offset + c * plane + i] = rgb[3 * i + c] * scale - shift;
  }
}

/**
 * RGB HWC bytes → normalised patches [N, p·p·3], raster order over the grid, (row, col, channel)
 * inside a patch: the layout of the encoder's patchify.
 */
export function normalizePatches(rgb: Uint8Array, p: Preprocess, patch: number, out: Float32Array, offset = 0): void {
  const grid = p.size / patch;
  const scale = [0, 1, 2].map((c) => 1 / (255 * p.std[c]));
  const shift = [0, 1, 2].map((c) => p.mean[c] / p.std[c]);
  let o = offset;
  for (let gr = 0; gr < grid; gr++) {
    for (let gc = 0; gc < grid; gc++) {
      for (let y = 0; y < patch; y++) {
        const row = (gr * patch + y) * p.size + gc * patch;
        for (let x = 0; x < patch; x++) {
          const px = 3 * (row + x);
          out[o++] = rgb[px] * scale[0] - shift[0];
          out[o++] = rgb[px + 1] * scale[1] - shift[1];
          out[o++] = rgb[px + 2] * scale[2] - shift[2];
        }
      }
    }
  }
}
