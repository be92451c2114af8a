/** Model architectures, registered by name. Training recipe lives in train/config.ts. */
import { z } from 'zod';

export const modelConfigSchema = z
  .object({
    imageSize: z.number().int().positive(),
    patchSize: z.number().int().positive(),
    channels: z.literal(3),
    dim: z.number().int().positive(),
    depth: z.number().int().positive(),
    heads: z.number().int().positive(),
    mlpRatio: z.number().positive(),
    predDim: z.number().int().positive(),
    predDepth: z.number().int().positive(),
    predHeads: z.number().int().positive(),
    eps: z.number().positive(),
  })
  .strict()
  .superRefine((m, ctx) => {
    if (m.imageSize % m.patchSize !== 0)
      ctx.addIssue({
        code: 'custom',
        message: `imageSize ${m.imageSize} is not a multiple of patchSize ${m.patchSize}`,
      });
    if (m.dim % m.heads !== 0)
      ctx.addIssue({ code: 'custom', message: `dim ${m.dim} is not divisible by heads ${m.heads}` });
    if (m.predDim % m.predHeads !== 0)
      ctx.addIssue({ code: 'custom', message: `predDim ${m.predDim} is not divisible by predHeads ${m.predHeads}` });
    if (m.dim % 4 !== 0 || m.predDim % 4 !== 0)
      ctx.addIssue({ code: 'custom', message: 'dim and predDim must be multiples of 4 (2-D sin-cos positions)' });
  });

export type ModelConfig = z.infer<typeof modelConfigSchema>;

export const presets = {
  /** For 32×32 inputs (CIFAR, Fashion-MNIST resized): 8×8 grid of 4×4 patches. */
  'vit-tiny': {
    imageSize: 32,
    patchSize: 4,
    channels: 3,
    dim: 192,
    depth: 6,
    heads: 3,
    mlpRatio: 4,
    predDim: 96,
    predDepth: 3,
    predHeads: 3,
    eps: 1e-6,
  },
  /** For 96×96 inputs (STL-10): 12×12 grid of 8×8 patches. */
  'vit-small': {
    imageSize: 96,
    patchSize: 8,
    channels: 3,
    dim: 384,
    depth: 12,
    heads: 6,
    mlpRatio: 4,
    predDim: 192,
    predDepth: 6,
    predHeads: 6,
    eps: 1e-6,
  },
  /** ViT-B/16 at 224, the reference experiment's model (~86M encoder parameters). */
  'vit-base-16': {
    imageSize: 224,
    patchSize: 16,
    channels: 3,
    dim: 768,
    depth: 12,
    heads: 12,
    mlpRatio: 4,
    predDim: 384,
    predDepth: 6,
    predHeads: 12,
    eps: 1e-6,
  },
} satisfies Record<string, ModelConfig>;

export type PresetName = keyof typeof presets;
export const presetNames = Object.keys(presets) as PresetName[];

export function gridOf(m: ModelConfig): { rows: number; cols: number } {
  const n = m.imageSize / m.patchSize;
  return { rows: n, cols: n };
}
