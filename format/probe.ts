/**
 * The probe head stored in a package (`probe.json`), one of two kinds:
 *
 * - linear (older heads have no `kind`): standardisation, then a linear layer and softmax over a
 *   readout of the patch embeddings (readout.ts);
 * - attentive: a learned query per head cross-attends over the image's patch tokens [N, D] (keys
 *   and values projected from the tokens), then layer norm, a linear layer and softmax; the
 *   evaluation's attentive probe (eval/attentive.ts), whose parameters it stores flat.
 */
import { z } from 'zod';
import { READOUTS } from './readout.ts';

const metricsSchema = z
  .object({
    accuracy: z.number(),
    macroF1: z.number(),
    split: z.string(),
    count: z.number().int(),
    l2: z.number().nonnegative().optional(),
  })
  .strict()
  .optional();

export const linearProbeSchema = z
  .object({
    kind: z.literal('linear').optional(),
    classes: z.array(z.string()).min(2),
    dim: z.number().int().positive(),
    /** Which features of the patch embeddings the head reads (readout.ts); older heads: mean. */
    readout: z.enum(READOUTS).default('mean'),
    mean: z.array(z.number()),
    std: z.array(z.number().positive()),
    /** [classes][dim] */
    weights: z.array(z.array(z.number())),
    bias: z.array(z.number()),
    metrics: metricsSchema,
  })
  .strict()
  .superRefine((p, ctx) => {
    const c = p.classes.length;
    if (p.mean.length !== p.dim || p.std.length !== p.dim)
      ctx.addIssue({ code: 'custom', message: 'mean/std length must equal dim' });
    if (p.weights.length !== c || p.weights.some((w) => w.length !== p.dim))
      ctx.addIssue({ code: 'custom', message: 'weights must be [classes][dim]' });
    if (p.bias.length !== c) ctx.addIssue({ code: 'custom', message: 'bias must have one entry per class' });
  });

/** Layer-norm epsilon of the attentive head (eval/attentive.ts's graph). */
export const ATTENTIVE_EPS = 1e-6;

export const attentiveProbeSchema = z
  .object({
    kind: z.literal('attentive'),
    classes: z.array(z.string()).min(2),
    /** Patch tokens per image and their width. */
    tokens: z.number().int().positive(),
    dim: z.number().int().positive(),
    heads: z.number().int().positive(),
    /** Row-major: wk, wv [dim, dim] (head h: columns h·dim/heads …), query [heads, dim/heads], wc [dim, classes]. */
    wk: z.array(z.number()),
    query: z.array(z.number()),
    wv: z.array(z.number()),
    bv: z.array(z.number()),
    normG: z.array(z.number()),
    normB: z.array(z.number()),
    wc: z.array(z.number()),
    bc: z.array(z.number()),
    metrics: metricsSchema,
  })
  .strict()
  .superRefine((p, ctx) => {
    const { dim: d, heads: h } = p;
    const c = p.classes.length;
    const bad = (message: string) => ctx.addIssue({ code: 'custom', message });
    if (d % h) bad(`dim ${d} must divide into ${h} heads`);
    if (p.wk.length !== d * d || p.wv.length !== d * d) bad('wk and wv must be [dim, dim]');
    if (p.query.length !== d) bad('query must be [heads, dim / heads]');
    if ([p.bv, p.normG, p.normB].some((v) => v.length !== d)) bad('bv, normG and normB must have dim entries');
    if (p.wc.length !== d * c || p.bc.length !== c) bad('wc must be [dim, classes] and bc [classes]');
  });

export const probeSchema = z.union([attentiveProbeSchema, linearProbeSchema]);

export type LinearProbeHead = z.infer<typeof linearProbeSchema>;
export type AttentiveProbeHead = z.infer<typeof attentiveProbeSchema>;
export type ProbeHead = z.infer<typeof probeSchema>;

function softmax(logits: Float64Array): Float64Array {
  const max = Math.max(...logits);
  let z = 0;
  for (let k = 0; k < logits.length; k++) z += logits[k] = Math.exp(logits[k] - max);
  for (let k = 0; k < logits.length; k++) logits[k] /= z;
  return logits;
}

/**
 * Class probabilities for one image: `input` is the head's readout of the patch embeddings
 * (readFeatures; linear heads) or the patch tokens [tokens, dim] (attentive heads).
 */
export function probeProbabilities(p: ProbeHead, input: ArrayLike<number>): Float64Array {
  return p.kind === 'attentive' ? attentiveProbabilities(p, input) : linearProbabilities(p, input);
}

function linearProbabilities(p: LinearProbeHead, embedding: ArrayLike<number>): Float64Array {
  const c = p.classes.length;
  const logits = new Float64Array(c);
  for (let k = 0; k < c; k++) {
    let s = p.bias[k];
    const w = p.weights[k];
    for (let j = 0; j < p.dim; j++) s += w[j] * ((embedding[j] - p.mean[j]) / p.std[j]);
    logits[k] = s;
  }
  return softmax(logits);
}

/** Class probabilities of an attentive head for one image's patch tokens [tokens, dim]. */
export function attentiveProbabilities(p: AttentiveProbeHead, tokens: ArrayLike<number>): Float64Array {
  const { tokens: n, dim: d, heads: h } = p;
  const dh = d / h;
  const c = p.classes.length;
  // Per head, the query read through the key projection (the key bias would cancel in the softmax).
  const u = new Float64Array(h * d);
  for (let hh = 0; hh < h; hh++)
    for (let i = 0; i < d; i++) {
      let s = 0;
      for (let j = 0; j < dh; j++) s += p.wk[i * d + hh * dh + j] * p.query[hh * dh + j];
      u[hh * d + i] = s;
    }
  const merged = new Float64Array(d);
  const weights = new Float64Array(n);
  const pooled = new Float64Array(d);
  for (let hh = 0; hh < h; hh++) {
    for (let t = 0; t < n; t++) {
      let s = 0;
      for (let i = 0; i < d; i++) s += tokens[t * d + i] * u[hh * d + i];
      weights[t] = s / Math.sqrt(dh);
    }
    softmax(weights);
    pooled.fill(0);
    for (let t = 0; t < n; t++) for (let i = 0; i < d; i++) pooled[i] += weights[t] * tokens[t * d + i];
    for (let j = 0; j < dh; j++) {
      let s = p.bv[hh * dh + j];
      for (let i = 0; i < d; i++) s += pooled[i] * p.wv[i * d + hh * dh + j];
      merged[hh * dh + j] = s;
    }
  }
  let mean = 0;
  for (let i = 0; i < d; i++) mean += merged[i] / d;
  let variance = 0;
  for (let i = 0; i < d; i++) variance += (merged[i] - mean) ** 2 / d;
  const inv = 1 / Math.sqrt(variance + ATTENTIVE_EPS);
  const logits = Float64Array.from(p.bc);
  for (let i = 0; i < d; i++) {
    const v = (merged[i] - mean) * inv * p.normG[i] + p.normB[i];
    for (let k = 0; k < c; k++) logits[k] += v * p.wc[i * c + k];
  }
  return softmax(logits);
}
