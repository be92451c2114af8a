/**
 * Training configuration: a preset's base config + recipe + optional JSON file + CLI flags → one
 * validated config.
 * Parsed once at the boundary; the rest of the trainer gets typed slices of it.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { modelConfigSchema, presets, presetNames, type PresetName } from '../model/presets.ts';
import { defaultMaskConfig } from './masks.ts';
import { IMAGENET_MEAN, IMAGENET_STD } from '../format/preprocess.ts';

const range = z.tuple([z.number(), z.number()]).refine(([a, b]) => a <= b, 'range must be [low, high]');
const fraction = z
  .tuple([z.number().gt(0).lte(1), z.number().gt(0).lte(1)])
  .refine(([a, b]) => a <= b, 'range must be [low, high]');

export const trainConfigSchema = z
  .object({
    preset: z.enum(presetNames as [PresetName, ...PresetName[]]),
    /** The named recipe the config started from (train/recipes.ts), for provenance. */
    recipe: z.string().default('none'),
    model: modelConfigSchema,
    masks: z
      .object({
        numTargets: z.number().int().min(1),
        targetScale: fraction,
        targetAspect: range,
        contextScale: fraction,
        contextAspect: range,
        minKeep: z.number().int().min(1),
      })
      .strict(),
    optim: z
      .object({
        lr: z.number().positive(),
        startLr: z.number().nonnegative(),
        finalLr: z.number().nonnegative(),
        warmupEpochs: z.number().nonnegative(),
        weightDecay: z.tuple([z.number().nonnegative(), z.number().nonnegative()]),
        ema: z.tuple([z.number().min(0).max(1), z.number().min(0).max(1)]),
        beta1: z.number().min(0).lt(1),
        beta2: z.number().min(0).lt(1),
      })
      .strict(),
    /**
     * What the encoder learns from: I-JEPA's masked prediction (`ijepa`); LeJEPA's agreement between
     * augmented views of each image, kept Gaussian by SIGReg (`lejepa`; sigreg.weight is its λ);
     * or both at once (`hybrid`: masked prediction on every global view, plus LeJEPA's loss on the
     * projected, pooled context of those views and the local views); or MAE's reconstruction of the
     * normalised pixels of a random `maskRatio` of each image's patches (`mae`).
     */
    objective: z.enum(['ijepa', 'lejepa', 'hybrid', 'mae']).default('ijepa'),
    /** Objective `mae`: the fraction of each image's patches hidden from the encoder. */
    maskRatio: z.number().gt(0).lt(1).default(0.75),
    loss: z.enum(['mse', 'smooth-l1']),
    sigreg: z.object({ weight: z.number().nonnegative(), projections: z.number().int().positive() }).strict(),
    /** Targets average this many top blocks of the target encoder (vit.ts targetTokens); 1 = I-JEPA. */
    targetLayers: z.number().int().positive().default(1),
    batch: z.number().int().positive(),
    accum: z.number().int().positive(),
    /**
     * Images per forward/backward inside a micro-batch (memory); the result does not depend on it.
     * Default: 32 on the CPU, the whole micro-batch on a GPU.
     */
    chunk: z.number().int().positive().optional(),
    epochs: z.number().positive(),
    maxSteps: z.number().int().positive().optional(),
    timeBudgetMin: z.number().positive().optional(),
    seed: z.number().int().nonnegative(),
    /** Pre-train without the validation split of data/split.ts (recipe studies). */
    holdout: z.boolean().default(false),
    augment: z
      .object({
        cropScale: fraction.nullable(),
        cropRatio: range,
        hflip: z.boolean(),
        /** The target encoder sees the image mirrored half the time (views.ts). */
        targetFlip: z.boolean().default(false),
        /** Global views per image for the views objectives, at the model's size: each its own crop, flip and colour ops. */
        views: z.number().int().min(1).default(2),
        /** Local views per image for the views objectives: smaller crops (`localScale` of the area) at `localSize` px. */
        localViews: z.number().int().min(0).default(0),
        localSize: z.number().int().positive().default(16),
        localScale: fraction.default([0.05, 0.3]),
        /** torchvision ColorJitter of each view, applied with probability p; null: none. */
        colorJitter: z
          .object({
            brightness: z.number().min(0),
            contrast: z.number().min(0),
            saturation: z.number().min(0),
            hue: z.number().min(0).max(0.5),
            p: z.number().min(0).max(1),
          })
          .strict()
          .nullable()
          .default(null),
        /** Probability that a view turns grey. */
        grayscale: z.number().min(0).max(1).default(0),
        /** Probability that a view is solarized (threshold 128). */
        solarize: z.number().min(0).max(1).default(0),
      })
      .strict(),
    normalize: z
      .object({
        mean: z.tuple([z.number(), z.number(), z.number()]),
        std: z.tuple([z.number(), z.number(), z.number()]),
      })
      .strict(),
    logEvery: z.number().int().positive(),
    diagEvery: z.number().int().positive(),
    checkpointEvery: z.number().int().positive(),
  })
  .strict()
  .refine((c) => c.targetLayers <= c.model.depth, {
    message: 'targetLayers exceeds the encoder depth',
    path: ['targetLayers'],
  })
  .refine((c) => !readsViews(c.objective) || (c.sigreg.weight > 0 && c.sigreg.weight < 1), {
    message:
      "objectives 'lejepa' and 'hybrid' need SIGReg with 0 < sigreg.weight < 1 (LeJEPA's λ): without it the views agree by collapsing",
    path: ['sigreg', 'weight'],
  })
  .refine((c) => c.augment.localSize % c.model.patchSize === 0 && c.augment.localSize <= c.model.imageSize, {
    message: 'augment.localSize must be a multiple of the patch size and at most the image size',
    path: ['augment', 'localSize'],
  })
  .refine((c) => !readsViews(c.objective) || c.augment.views >= 2 || c.augment.localViews >= 1, {
    message: 'a views objective needs at least two views per image (augment.views + augment.localViews)',
    path: ['augment', 'views'],
  })
  .refine((c) => c.objective !== 'mae' || (c.sigreg.weight === 0 && !c.augment.targetFlip && c.targetLayers === 1), {
    message:
      "objective 'mae' reconstructs pixels: it takes no SIGReg, target flip or target layers (it has no target encoder)",
    path: ['objective'],
  });

/** The objectives that learn from several augmented views of each image (the loader draws them). */
export function readsViews(objective: string): boolean {
  return objective === 'lejepa' || objective === 'hybrid';
}

export type TrainConfig = z.infer<typeof trainConfigSchema>;

/**
 * What every recipe overrides (train/recipes/*.json, study/variants/*.json): a preset's
 * architecture with the published I-JEPA optimisation, masks and crops, an MSE loss and no
 * SIGReg. No command trains this alone: `--recipe reference` is it with smooth-L1, `--recipe
 * ijepa` is smooth-L1 with SIGReg, a lower learning rate and whole images, and `lejepa`,
 * `hybrid` and `default` (the CLI's default, LeJEPA's) change the objective.
 */
export function baseConfig(preset: PresetName): TrainConfig {
  return {
    preset,
    recipe: 'none',
    model: { ...presets[preset] },
    masks: { ...defaultMaskConfig },
    optim: {
      lr: 1e-3,
      startLr: 2e-4,
      finalLr: 1e-6,
      warmupEpochs: 15,
      weightDecay: [0.04, 0.4],
      ema: [0.996, 1.0],
      beta1: 0.9,
      beta2: 0.999,
    },
    objective: 'ijepa',
    maskRatio: 0.75,
    loss: 'mse',
    sigreg: { weight: 0, projections: 64 },
    targetLayers: 1,
    batch: 128,
    accum: 1,
    epochs: 100,
    seed: 0,
    holdout: false,
    augment: {
      cropScale: [0.3, 1.0],
      cropRatio: [0.75, 4 / 3],
      hflip: false,
      targetFlip: false,
      views: 2,
      localViews: 0,
      localSize: 16,
      localScale: [0.05, 0.3],
      colorJitter: null,
      grayscale: 0,
      solarize: 0,
    },
    normalize: { mean: IMAGENET_MEAN, std: IMAGENET_STD },
    logEvery: 10,
    diagEvery: 50,
    checkpointEvery: 100,
  };
}

type DeepPartial<T> = {
  [K in keyof T]?: T[K] extends object ? (T[K] extends unknown[] ? T[K] : DeepPartial<T[K]>) : T[K];
};
export type ConfigOverrides = DeepPartial<TrainConfig>;

/** Deep merge of overrides: objects merge key by key; anything else (arrays included) replaces. */
export function merge<T>(base: T, over: unknown): T {
  if (over === undefined) return base;
  if (
    typeof base !== 'object' ||
    base === null ||
    Array.isArray(base) ||
    typeof over !== 'object' ||
    over === null ||
    Array.isArray(over)
  )
    return over as T;
  const out: Record<string, unknown> = { ...(base as Record<string, unknown>) };
  for (const [k, v] of Object.entries(over)) out[k] = merge(out[k], v);
  return out as T;
}

function formatIssues(e: z.ZodError): string {
  return e.issues.map((i) => `  ${i.path.join('.') || '(root)'}: ${i.message}`).join('\n');
}

/** Reads a JSON config file; any field of TrainConfig may appear (unknown fields are errors). */
export function readConfigFile(path: string): ConfigOverrides {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new Error(`config file ${path}: ${(e as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    throw new Error(`config file ${path}: expected a JSON object`);
  return raw as ConfigOverrides;
}

/** The preset's base config ← recipe ← file ← flags (each layer a ConfigOverrides), validated as a whole. */
export function resolveConfig(preset: PresetName, ...layers: (ConfigOverrides | undefined)[]): TrainConfig {
  let c: unknown = baseConfig(preset);
  for (const l of layers) c = merge(c, l);
  const parsed = trainConfigSchema.safeParse(c);
  if (!parsed.success) throw new Error(`invalid training config:\n${formatIssues(parsed.error)}`);
  return parsed.data;
}

/**
 * A config saved in a checkpoint may carry `augment.jitter` s (brightness, contrast and saturation
 * factors in 1 ± 0.8·s, always applied): it reads as that colorJitter.
 */
function withColorJitter(raw: unknown): unknown {
  const a = (raw as { augment?: Record<string, unknown> } | null)?.augment;
  if (!a || typeof a !== 'object' || !('jitter' in a) || 'colorJitter' in a) return raw;
  const { jitter, ...rest } = a;
  const s = typeof jitter === 'number' ? 0.8 * jitter : Number.NaN;
  const colorJitter = s === 0 ? null : { brightness: s, contrast: s, saturation: s, hue: 0, p: 1 };
  return { ...(raw as object), augment: { ...rest, colorJitter } };
}

export function parseConfig(raw: unknown, where: string): TrainConfig {
  const parsed = trainConfigSchema.safeParse(withColorJitter(raw));
  if (!parsed.success) throw new Error(`${where}: invalid training config:\n${formatIssues(parsed.error)}`);
  return parsed.data;
}
