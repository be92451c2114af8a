/** A tiny random-weight model package and image fixtures for HTTP tests. */
import { tempDir } from '../tmp.ts';
import { join } from 'node:path';
import sharp from 'sharp';
import { tinyModel } from '../helpers.ts';
import { encoderGraph, predictorGraph } from '../../onnx/inference.ts';
import { ParamStore } from '../../model/params.ts';
import { encoderSpecs, predictorSpecs } from '../../model/vit.ts';
import { FORMAT_VERSION, architectureOf, type Manifest } from '../../format/manifest.ts';
import { contentHash, describeFile, writePackage } from '../../format/package.ts';
import type { ProbeHead } from '../../format/probe.ts';

/** `seed`: other weights under the same id (`id`, default by the probe), as a retrained re-export has. */
export function makePackage(withProbe: boolean, o: { seed?: number; id?: string } = {}): string {
  const m = tinyModel;
  const online = ParamStore.init([...encoderSpecs(m), ...predictorSpecs(m)], o.seed ?? 1, 'init');
  const target = new ParamStore(encoderSpecs(m), online.data.slice(0, new ParamStore(encoderSpecs(m)).size));
  const files: Record<string, Uint8Array> = {
    'encoder.onnx': encoderGraph(m, target),
    'predictor.onnx': predictorGraph(m, online),
  };
  const described: Manifest['files'] = {
    encoder: describeFile('encoder.onnx', files['encoder.onnx']),
    predictor: describeFile('predictor.onnx', files['predictor.onnx']),
  };
  const classes = ['dark', 'light', 'other'];
  if (withProbe) {
    const head: ProbeHead = {
      classes,
      dim: m.dim,
      readout: 'mean',
      mean: new Array(m.dim).fill(0),
      std: new Array(m.dim).fill(1),
      weights: classes.map((_, k) => Array.from({ length: m.dim }, (_, j) => Math.sin(k * 7 + j))),
      bias: [0.1, 0, -0.1],
    };
    files['probe.json'] = new TextEncoder().encode(JSON.stringify(head));
    described.probe = describeFile('probe.json', files['probe.json']);
  }
  const manifest: Manifest = {
    formatVersion: FORMAT_VERSION,
    id: o.id ?? (withProbe ? 'tiny-probe' : 'tiny'),
    contentHash: contentHash(described),
    architecture: architectureOf('test', m),
    preprocess: { size: m.imageSize, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25], resize: 'squash' },
    patches: { size: m.patchSize, rows: 4, cols: 4 },
    embeddingDim: m.dim,
    files: described,
    ...(withProbe ? { classes } : {}),
    training: {
      data: 'none (random weights)',
      steps: 0,
      imagesSeen: 0,
      seed: 1,
      elapsedSec: 0,
      exportedAt: new Date(0).toISOString(),
    },
  };
  const dir = join(tempDir('ijepa-pkg-'), manifest.id);
  writePackage(dir, manifest, files);
  return dir;
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(b: Buffer): number {
  let c = 0xffffffff;
  for (const x of b) c = CRC_TABLE[(c ^ x) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function chunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}

/** A ~60-byte PNG whose header claims width × height (a decompression bomb's calling card). */
export function pngClaiming(width: number, height: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', Buffer.from([0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01])),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

/** A two-frame 1×1 GIF89a. */
export function animatedGif(): Buffer {
  const frame = [0x2c, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0x02, 0x02, 0x44, 0x01, 0x00];
  return Buffer.from([
    ...Buffer.from('GIF89a', 'ascii'),
    1,
    0,
    1,
    0,
    0x80,
    0,
    0,
    0,
    0,
    0,
    255,
    255,
    255,
    0x21,
    0xf9,
    4,
    0,
    10,
    0,
    0,
    0,
    ...frame,
    0x21,
    0xf9,
    4,
    0,
    10,
    0,
    0,
    0,
    ...frame,
    0x3b,
  ]);
}

export async function images() {
  const rgb = (w: number, h: number, c: { r: number; g: number; b: number }) =>
    sharp({ create: { width: w, height: h, channels: 3, background: c } });
  const jpeg = await rgb(40, 30, { r: 200, g: 30, b: 60 }).jpeg().toBuffer();
  return {
    png: await rgb(20, 20, { r: 10, g: 200, b: 90 }).png().toBuffer(),
    jpeg,
    webp: await rgb(33, 17, { r: 90, g: 90, b: 250 }).webp().toBuffer(),
    gif: await rgb(12, 12, { r: 0, g: 0, b: 0 }).gif().toBuffer(),
    rgbaPng: await sharp({
      create: { width: 16, height: 16, channels: 4, background: { r: 0, g: 0, b: 0, alpha: 0.2 } },
    })
      .png()
      .toBuffer(),
    grayPng: await rgb(16, 16, { r: 120, g: 120, b: 120 }).grayscale().png().toBuffer(),
    png16: await rgb(16, 16, { r: 1, g: 2, b: 3 }).png().toColourspace('rgb16').toBuffer(),
    cmykJpeg: await rgb(24, 24, { r: 30, g: 160, b: 220 }).toColourspace('cmyk').jpeg().toBuffer(),
    exifJpeg: await rgb(30, 10, { r: 100, g: 100, b: 100 }).jpeg().withMetadata({ orientation: 6 }).toBuffer(),
    tiff: await rgb(8, 8, { r: 5, g: 5, b: 5 }).tiff().toBuffer(),
    truncatedJpeg: jpeg.subarray(0, Math.floor(jpeg.length / 2)),
    truncatedPng: (await rgb(64, 64, { r: 1, g: 1, b: 1 }).png().toBuffer()).subarray(0, 60),
    svg: Buffer.from(
      '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10" fill="red"/></svg>',
    ),
    svgRemote: Buffer.from(
      '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="10" height="10"><image xlink:href="http://127.0.0.1:1/x.png" width="10" height="10"/></svg>',
    ),
    bomb: pngClaiming(50_000, 50_000),
    zeroDims: pngClaiming(0, 0),
    animated: animatedGif(),
    text: Buffer.from('this is not an image, just text\n'),
    html: Buffer.from('<!doctype html><html><body>hi</body></html>'),
    bmp: Buffer.concat([Buffer.from('BM'), Buffer.alloc(60, 1)]),
    random: Buffer.from(Array.from({ length: 500 }, (_, i) => (i * 97 + 13) % 256)),
  };
}

/** A w×w PNG of a smooth pattern, distinct for each seed. */
export async function pattern(seed: number, w = 24): Promise<Buffer> {
  const raw = Buffer.alloc(w * w * 3);
  for (let i = 0; i < raw.length; i++) raw[i] = (Math.sin(i * (seed + 1) * 0.37) * 120 + 128 + seed * 17) & 255;
  return sharp(raw, { raw: { width: w, height: w, channels: 3 } })
    .png()
    .toBuffer();
}
