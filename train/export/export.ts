/** `ijepa export`: run directory → model package (ONNX encoder + predictor, manifest). */
import { join, basename, resolve } from 'node:path';
import { readCheckpoint } from '../checkpoint.ts';
import { parseConfig } from '../config.ts';
import { CHECKPOINT_FILE, preprocessOf } from '../loop.ts';
import { gridOf } from '../model/presets.ts';
import { encoderSpecs, predictorSpecs } from '../model/vit.ts';
import { ParamStore } from '../params.ts';
import { encoderGraph, predictorGraph } from './graphs.ts';
import { FORMAT_VERSION, type Manifest } from '../../serve/format/manifest.ts';
import { contentHash, describeFile, writePackage } from '../../serve/format/package.ts';

export interface ExportOptions {
  run: string;
  out: string;
  id?: string;
  classes?: string[];
}

export function exportRun(o: ExportOptions): Manifest {
  const ckpt = readCheckpoint(join(o.run, CHECKPOINT_FILE));
  const cfg = parseConfig(ckpt.meta.config, o.run);
  const state = ckpt.meta.state as { step: number; imagesSeen: number; elapsedSec: number };
  const m = cfg.model;
  const target = new ParamStore(encoderSpecs(m), ckpt.arrays.get('target'));
  const online = new ParamStore([...encoderSpecs(m), ...predictorSpecs(m)], ckpt.arrays.get('online'));
  const files = { 'encoder.onnx': encoderGraph(m, target), 'predictor.onnx': predictorGraph(m, online) };
  const grid = gridOf(m);
  const described = { encoder: describeFile('encoder.onnx', files['encoder.onnx']), predictor: describeFile('predictor.onnx', files['predictor.onnx']) };
  const manifest: Manifest = {
    formatVersion: FORMAT_VERSION,
    id: o.id ?? basename(resolve(o.out)),
    contentHash: contentHash(described),
    architecture: { preset: cfg.preset, imageSize: m.imageSize, patchSize: m.patchSize, dim: m.dim, depth: m.depth, heads: m.heads, predDim: m.predDim, predDepth: m.predDepth, mlpRatio: m.mlpRatio, eps: m.eps },
    preprocess: preprocessOf(cfg),
    patches: { size: m.patchSize, rows: grid.rows, cols: grid.cols },
    embeddingDim: m.dim,
    files: described,
    ...(o.classes ? { classes: o.classes } : {}),
    training: {
      data: String(ckpt.meta.data ?? ''), steps: state.step, imagesSeen: state.imagesSeen, seed: cfg.seed,
      elapsedSec: Math.round(state.elapsedSec), exportedAt: new Date().toISOString(),
    },
  };
  writePackage(o.out, manifest, files);
  return manifest;
}
