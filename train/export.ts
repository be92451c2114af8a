/** `ijepa export`: run directory → model package (ONNX encoder + predictor, manifest). */
import { join, basename, resolve } from 'node:path';
import { readCheckpoint } from './checkpoint.ts';
import { parseConfig, type TrainConfig } from './config.ts';
import { CHECKPOINT_FILE, preprocessOf } from './loop.ts';
import { gridOf, type ModelConfig } from '../model/presets.ts';
import { encoderSpecs, predictorSpecs } from '../model/vit.ts';
import { ParamStore } from '../model/params.ts';
import { contextEncoderGraph, encoderGraph, predictorGraph, weightsIn } from '../onnx/inference.ts';
import { FORMAT_VERSION, architectureOf, type Manifest } from '../format/manifest.ts';
import { contentHash, describeFile, writePackage } from '../format/package.ts';

export interface ExportOptions {
  run: string;
  out: string;
  id?: string;
  classes?: string[];
  /**
   * Keep only the encoder's first `layers` blocks (then its final norm): the probe reads an
   * intermediate layer. The predictor expects the full encoder's tokens, so it is left out.
   */
  layers?: number;
}

export function checkLayers(layers: number, depth: number): void {
  if (!Number.isInteger(layers) || layers < 1 || layers > depth)
    throw new Error(`--layers ${layers}: the encoder has blocks 1..${depth}`);
}

export function exportRun(o: ExportOptions): Manifest {
  const ckpt = readCheckpoint(join(o.run, CHECKPOINT_FILE));
  const cfg = parseConfig(ckpt.meta.config, o.run);
  const _state = ckpt.meta.state as { step: number; imagesSeen: number; elapsedSec: number };
  const full = cfg.model;
  const layers = o.layers ?? full.depth;
  checkLayers(layers, full.depth);
  const m = { ...full, depth: layers };
  const target = new ParamStore(encoderSpecs(full), ckpt.arrays.get('target'));
  const files: Record<string, Uint8Array> = { 'encoder.onnx': encoderGraph(m, target) };
  const described: Manifest['files'] = { encoder: describeFile('encoder.onnx', files['encoder.onnx']) };
  // A LeJEPA run has no predictor (its online head is a projector) nor has an MAE run (a pixel
  // decoder), so their packages have none; a hybrid run's projector follows its predictor and
  // stays behind.
  if (layers === full.depth && (cfg.objective === 'ijepa' || cfg.objective === 'hybrid')) {
    const specs = [...encoderSpecs(full), ...predictorSpecs(full)];
    const online = new ParamStore(specs, ckpt.arrays.get('online')!.subarray(0, new ParamStore(specs).size));
    files['predictor.onnx'] = predictorGraph(full, online);
    described.predictor = describeFile('predictor.onnx', files['predictor.onnx']);
    files['context_encoder.onnx'] = contextEncoderGraph(full, weightsIn(files['encoder.onnx'], 'encoder.onnx', full));
    described.context = describeFile('context_encoder.onnx', files['context_encoder.onnx']);
  }
  const manifest = runManifest(ckpt.meta, cfg, m, described, {
    id: o.id ?? basename(resolve(o.out)),
    classes: o.classes,
  });
  writePackage(o.out, manifest, files);
  return manifest;
}

/**
 * The manifest of a package of a run's encoder `m` (the run's model, or its first blocks) whose
 * files are `files`: for `ijepa export`, and for tools that run a run's encoder as a package would.
 */
export function runManifest(
  meta: Record<string, unknown>,
  cfg: TrainConfig,
  m: ModelConfig,
  files: Manifest['files'],
  o: { id: string; classes?: string[] },
): Manifest {
  const state = meta.state as { step: number; imagesSeen: number; elapsedSec: number };
  const grid = gridOf(m);
  return {
    formatVersion: FORMAT_VERSION,
    id: o.id,
    contentHash: contentHash(files),
    architecture: architectureOf(cfg.preset, m),
    preprocess: preprocessOf(cfg),
    patches: { size: m.patchSize, rows: grid.rows, cols: grid.cols },
    embeddingDim: m.dim,
    files,
    ...(o.classes ? { classes: o.classes } : {}),
    training: {
      data: String(meta.data ?? ''),
      steps: state.step,
      imagesSeen: state.imagesSeen,
      seed: cfg.seed,
      elapsedSec: Math.round(state.elapsedSec),
      exportedAt: new Date().toISOString(),
      recipe: cfg.recipe,
      objective: cfg.objective,
      ...(typeof meta.hardware === 'string' ? { hardware: meta.hardware } : {}),
    },
  };
}
