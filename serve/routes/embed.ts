/** POST /v1/embeddings and POST /v1/classify: parse → embed (batched) → serialise. */
import type { Request, Response } from 'express';
import { ApiError } from '../errors.ts';
import { probeProbabilities } from '../../format/probe.ts';
import { readFeatures } from '../../format/readout.ts';
import type { Outcome, Service } from '../service.ts';
import { parseImages, type RequestOptions } from './inputs.ts';

/** IEEE half-precision bits of a float32 value (round to nearest even). */
export function toHalf(v: number): number {
  const f = new Float32Array([v]);
  const x = new Uint32Array(f.buffer)[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
  return sign | half;
}

function geometry(svc: Service) {
  const m = svc.manifest;
  return {
    inputSize: m.preprocess.size,
    resize: m.preprocess.resize,
    patchSize: m.patches.size,
    grid: [m.patches.rows, m.patches.cols],
    dim: m.embeddingDim,
  };
}

function failIfSingle(single: boolean, outcomes: Outcome[]): void {
  const first = outcomes[0];
  if (single && 'error' in first) throw first.error;
}

/** Values as little-endian bytes of `dtype` (this host's order: onnxruntime-node runs only on little-endian CPUs). */
function bytesOf(values: Float32Array, dtype: RequestOptions['dtype']): Buffer {
  if (dtype === 'float32') return Buffer.from(values.buffer, values.byteOffset, values.byteLength);
  const half = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) half[i] = toHalf(values[i]);
  return Buffer.from(half.buffer);
}

export async function embeddings(svc: Service, req: Request, res: Response, signal?: AbortSignal): Promise<void> {
  const { items, single, options } = parseImages(req, svc.options.maxImages);
  const m = svc.manifest;
  const [rows, cols] = [m.patches.rows, m.patches.cols];
  const d = m.embeddingDim;
  const binary = (req.headers.accept ?? '').includes('application/octet-stream');
  // Refused before any decoding or inference.
  const numbers = items.length * (options.patches ? (rows * cols + 1) * d : d);
  if (!binary && options.encoding === 'json' && numbers > svc.options.maxJsonNumbers) {
    throw new ApiError(
      'response_too_large',
      `the JSON answer for ${items.length} images${options.patches ? ' with patches' : ''} would hold ${numbers} numbers; the limit is ${svc.options.maxJsonNumbers}: ask for encoding=base64 (each image's values as base64 of float32 or float16 bytes) or accept: application/octet-stream`,
    );
  }
  const outcomes = await svc.embedAll(items, signal);
  failIfSingle(single, outcomes);
  if (binary) {
    const failed = outcomes.filter((o): o is Extract<Outcome, { error: ApiError }> => 'error' in o);
    if (failed.length) {
      const e = failed[0].error;
      res.status(e.status).json({
        error: `image ${failed[0].index}: ${e.message}`,
        code: e.code,
        failed: failed.map((f) => ({ index: f.index, ...f.error.toJSON() })),
      });
      return;
    }
    const per = options.patches ? rows * cols * d : d;
    const values = new Float32Array(outcomes.length * per);
    outcomes.forEach((o, i) =>
      values.set('result' in o ? (options.patches ? o.result.tokens : o.result.pooled) : [], i * per),
    );
    const shape = options.patches ? [outcomes.length, rows, cols, d] : [outcomes.length, d];
    const body = bytesOf(values, options.dtype);
    res.set({
      'content-type': 'application/octet-stream',
      'x-shape': shape.join(','),
      'x-dtype': options.dtype,
      'x-model': m.id,
    });
    res.send(body);
    return;
  }
  if (options.encoding === 'base64') {
    const b64 = (v: Float32Array) => bytesOf(v, options.dtype).toString('base64');
    res.json({
      model: m.id,
      geometry: geometry(svc),
      encoding: 'base64',
      dtype: options.dtype,
      data: outcomes.map((o) => {
        if ('error' in o) return { index: o.index, ...o.error.toJSON() };
        const out: Record<string, unknown> = { index: o.index, embedding: b64(o.result.pooled) };
        if (options.patches) out.patches = b64(o.result.tokens);
        return out;
      }),
    });
    return;
  }
  res.json({
    model: m.id,
    geometry: geometry(svc),
    data: outcomes.map((o) => {
      if ('error' in o) return { index: o.index, ...o.error.toJSON() };
      const out: Record<string, unknown> = { index: o.index, embedding: Array.from(o.result.pooled) };
      if (options.patches) {
        out.patches = Array.from({ length: rows }, (_, r) =>
          Array.from({ length: cols }, (_, c) =>
            Array.from(o.result.tokens.subarray((r * cols + c) * d, (r * cols + c + 1) * d)),
          ),
        );
      }
      return out;
    }),
  });
}

export async function classify(svc: Service, req: Request, res: Response, signal?: AbortSignal): Promise<void> {
  const probe = svc.probe;
  if (!probe)
    throw new ApiError('no_probe', `model '${svc.manifest.id}' has no probe head; run \`ijepa probe\` on it first`);
  const { items, single, options } = parseImages(req, svc.options.maxImages);
  const outcomes = await svc.embedAll(items, signal);
  failIfSingle(single, outcomes);
  res.json({
    model: svc.manifest.id,
    data: outcomes.map((o) => {
      if ('error' in o) return { index: o.index, ...o.error.toJSON() };
      const { rows, cols } = svc.manifest.patches;
      const input =
        probe.kind === 'attentive'
          ? o.result.tokens
          : probe.readout === 'mean'
            ? o.result.pooled
            : readFeatures(probe.readout, o.result.tokens, 1, rows, cols, svc.manifest.embeddingDim);
      const p = probeProbabilities(probe, input);
      const top = [...p.keys()].sort((a, b) => p[b] - p[a]).slice(0, options.topK);
      return { index: o.index, predictions: top.map((k) => ({ label: probe.classes[k], probability: p[k] })) };
    }),
  });
}
