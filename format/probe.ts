/**
 * The linear-probe head stored in a package (`probe.json`): standardisation then a linear layer
 * and softmax over the pooled embedding.
 */
import { z } from 'zod';
import { READOUTS } from './readout.ts';

export const probeSchema = z
  .object({
    classes: z.array(z.string()).min(2),
    dim: z.number().int().positive(),
    /** Which features of the patch embeddings the head reads (readout.ts); older heads: mean. */
    readout: z.enum(READOUTS).default('mean'),
    mean: z.array(z.number()),
    std: z.array(z.number().positive()),
    /** [classes][dim] */
    weights: z.array(z.array(z.number())),
    bias: z.array(z.number()),
    metrics: z
      .object({
        accuracy: z.number(),
        macroF1: z.number(),
        split: z.string(),
        count: z.number().int(),
        l2: z.number().nonnegative().optional(),
      })
      .strict()
      .optional(),
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

export type ProbeHead = z.infer<typeof probeSchema>;

/** Class probabilities for one image's features (readFeatures with the head's readout). */
export function probeProbabilities(p: ProbeHead, embedding: ArrayLike<number>): Float64Array {
  const c = p.classes.length;
  const logits = new Float64Array(c);
  for (let k = 0; k < c; k++) {
    let s = p.bias[k];
    const w = p.weights[k];
    for (let j = 0; j < p.dim; j++) s += w[j] * ((embedding[j] - p.mean[j]) / p.std[j]);
    logits[k] = s;
  }
  const max = Math.max(...logits);
  let z = 0;
  for (let k = 0; k < c; k++) z += logits[k] = Math.exp(logits[k] - max);
  for (let k = 0; k < c; k++) logits[k] /= z;
  return logits;
}
