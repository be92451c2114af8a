/**
 * npm run bench:decode — CPU seconds of one server decode (format/preprocess.ts
 * toRgb: decode, then resize to the model's input) over image shapes, one decode at a time, best
 * of three. What decoding costs depends on the shape, not on the pixel count alone: the limits and
 * the gate weights of runtime/decode.ts come from this table.
 *   SIZE (model input side, 32), FORMAT (png | jpeg | webp | avif | gif | tiff, png),
 *   FILL (flat | noise, flat), SHAPES (JSON [[w, h], …])
 */
import sharp, { type Create } from 'sharp';
import { defaultPreprocess, toRgb } from '../format/preprocess.ts';

const p = defaultPreprocess(Number(process.env.SIZE ?? 32));
const noise = process.env.FILL === 'noise';
const format = (process.env.FORMAT ?? 'png') as 'png' | 'jpeg' | 'webp' | 'avif' | 'gif' | 'tiff';
const shapes: [number, number][] = JSON.parse(
  process.env.SHAPES ??
    JSON.stringify([
      [28, 28],
      [1000, 1000],
      [6000, 6600],
      [16000, 2000],
      [2000, 16000],
      [16384, 256],
      [256, 16384],
      [16384, 64],
      [64, 16384],
      [16384, 1],
      [1, 16384],
      [100000, 1],
      [1, 100000],
      [1000000, 1],
      [1, 1000000],
    ]),
);

const image = (width: number, height: number) => {
  const create: Create = { width, height, channels: 3, background: '#777' };
  if (noise) create.noise = { type: 'gaussian', mean: 128, sigma: 30 };
  return sharp({ create, limitInputPixels: false })
    .toFormat(format, format === 'avif' ? { effort: 0 } : format === 'png' ? { compressionLevel: noise ? 1 : 9 } : {})
    .toBuffer();
};

console.log('shape\tbytes\tCPU s\tns per pixel\tns per row');
for (const [w, h] of shapes) {
  const data = await image(w, h);
  let best = Number.POSITIVE_INFINITY;
  let error = '';
  for (let r = 0; r < 3 && !error; r++) {
    const c0 = process.cpuUsage();
    await toRgb({ kind: 'encoded', data }, p).catch((e: Error) => (error = e.message.split('\n')[0]));
    const c = process.cpuUsage(c0);
    best = Math.min(best, (c.user + c.system) / 1e6);
  }
  console.log(
    `${w}x${h}\t${data.length}\t${best.toFixed(4)}\t${((best * 1e9) / (w * h)).toFixed(1)}\t${((best * 1e9) / h).toFixed(0)}${error ? `\terror: ${error}` : ''}`,
  );
}
