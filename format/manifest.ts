/**
 * The model package contract (`models/<name>/manifest.json`): written by `ijepa export`, read and
 * validated by the server. Everything a reader needs to turn pixels into the encoder's input and
 * to interpret its outputs is here; the server never looks at training code.
 */
import { z } from 'zod';
import { preprocessSchema } from './preprocess.ts';

export const FORMAT_VERSION = 1;

const fileSchema = z
  .object({
    path: z.string().regex(/^[A-Za-z0-9._-]+$/, 'a plain file name inside the package'),
    sha256: z.string().regex(/^[0-9a-f]{64}$/),
    bytes: z.number().int().nonnegative(),
  })
  .strict();

export const manifestSchema = z
  .object({
    formatVersion: z.literal(FORMAT_VERSION),
    id: z.string().min(1),
    /** SHA-256 over the files' hashes in name order: changes whenever any file does. */
    contentHash: z.string().regex(/^[0-9a-f]{64}$/),
    architecture: z
      .object({
        preset: z.string(),
        imageSize: z.number().int().positive(),
        patchSize: z.number().int().positive(),
        dim: z.number().int().positive(),
        depth: z.number().int().positive(),
        heads: z.number().int().positive(),
        predDim: z.number().int().positive(),
        predDepth: z.number().int().positive(),
        mlpRatio: z.number().positive().default(4),
        eps: z.number().positive().default(1e-6),
      })
      .strict(),
    preprocess: preprocessSchema,
    /** Layout of `tokens`: grid rows × cols of patchSize-pixel patches, raster order. */
    patches: z
      .object({
        size: z.number().int().positive(),
        rows: z.number().int().positive(),
        cols: z.number().int().positive(),
      })
      .strict(),
    embeddingDim: z.number().int().positive(),
    files: z
      .object({
        encoder: fileSchema,
        predictor: fileSchema.optional(),
        /**
         * The encoder on a selection of patches (inputs `patches`, `ctx_idx`, `ctx_mask`), what the
         * predictor reads. Its weights are the encoder file's own, by ONNX external data.
         */
        context: fileSchema.optional(),
        probe: fileSchema.optional(),
      })
      .strict(),
    classes: z.array(z.string()).optional(),
    training: z
      .object({
        data: z.string(),
        steps: z.number().int().nonnegative(),
        imagesSeen: z.number().int().nonnegative(),
        seed: z.number().int().nonnegative(),
        elapsedSec: z.number().nonnegative(),
        exportedAt: z.string(),
        /** The trainer's recipe and objective (packages written before these were recorded lack them). */
        recipe: z.string().optional(),
        objective: z.enum(['ijepa', 'lejepa', 'hybrid', 'mae']).optional(),
        /** Where it trained: engine, device, threads, CPU (recorded by the trainer since it was added). */
        hardware: z.string().optional(),
      })
      .strict(),
    /**
     * Set by `ijepa finetune`: the encoder and the head were trained on labels, starting from
     * another package's encoder (`from`) or from a random draw of the same architecture (no `from`).
     */
    finetune: z
      .object({
        from: z
          .object({ id: z.string(), contentHash: z.string().regex(/^[0-9a-f]{64}$/) })
          .strict()
          .optional(),
        data: z.string(),
        labeled: z.number().int().nonnegative(),
        epochs: z.number().nonnegative(),
        steps: z.number().int().nonnegative(),
        imagesSeen: z.number().int().nonnegative(),
        elapsedSec: z.number().nonnegative(),
        settings: z.record(z.string(), z.union([z.number(), z.string(), z.boolean(), z.null()])),
      })
      .strict()
      .optional(),
  })
  .strict();

export type Manifest = z.infer<typeof manifestSchema>;
export type PackageFile = z.infer<typeof fileSchema>;

type Architecture = Manifest['architecture'];

/** The manifest's record of the architecture a package's graphs were built for (a model config has more). */
export function architectureOf(preset: string, m: Omit<Architecture, 'preset'>): Architecture {
  const { imageSize, patchSize, dim, depth, heads, predDim, predDepth, mlpRatio, eps } = m;
  return { preset, imageSize, patchSize, dim, depth, heads, predDim, predDepth, mlpRatio, eps };
}
