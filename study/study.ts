/**
 * `ijepa study`: the small-budget recipe study. For each budget × recipe × seed: pre-train with
 * the validation split held out (data/split.ts), export, and score frozen linear probes on that
 * validation split (the test split is never read), next to random-init and raw-pixel probes
 * computed once per encoder architecture. Results append to results.jsonl (several study processes may
 * share one directory, e.g. one per core); study.md and study.png are rebuilt from all of them.
 */
import { appendFileSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { resolveConfig, type ConfigOverrides } from '../train/config.ts';
import { variantOverrides } from './variants.ts';
import { gridOf, type ModelConfig, type PresetName } from '../model/presets.ts';
import { CHECKPOINT_FILE, METRICS_FILE, train, type RunSummary } from '../train/loop.ts';
import { readCheckpoint } from '../train/checkpoint.ts';
import { checkLayers, exportRun } from '../train/export.ts';
import { runEval, type EvalRow } from '../eval/eval.ts';
import { collapseWarning } from '../train/diagnostics.ts';
import { barChartSvg, writePng, type Bar } from '../eval/plot.ts';
import { READOUTS, readoutFits, type Readout } from '../format/readout.ts';
import { describeL2, type L2 } from '../eval/probe.ts';

export interface StudyOptions {
  data: string;
  out: string;
  preset: PresetName;
  recipes: string[];
  budgets: number[];
  seeds: number[];
  /** onnxruntime threads of each run's training and probes (the CLI's default: all cores). */
  threads: number;
  /** Overrides applied after each recipe (e.g. a smaller model or batch). */
  config?: ConfigOverrides;
  /** Labeled training images for the probes (validation split stays whole). */
  limit?: number;
  /** How the probes read the encoder: readouts × encoder depths (first k blocks; default: all). */
  readouts?: Readout[];
  layers?: number[];
  /** The probes' L2 penalty; one study directory holds probes of one setting. */
  l2?: L2;
  log?: (s: string) => void;
}

const DEFAULT_READOUTS: Readout[] = ['mean', 'grid2'];

/** A probe's key in results: its readout, prefixed by `L<k>/` when it reads block k of a deeper encoder. */
export function probeKey(readout: Readout, layers: number, depth: number): string {
  return layers === depth ? readout : `L${layers}/${readout}`;
}

export interface StudyResult {
  recipe: string;
  budgetMin: number;
  seed: number;
  steps: number;
  imagesSeen: number;
  elapsedSec: number;
  finalLoss: number;
  featStd?: number;
  rankMe?: number;
  collapsed: string | null;
  /** Validation accuracy / macro-F1 by probe (probeKey). */
  val: Record<string, Score>;
  arch: string;
  /** The probes' L2 penalty (records written before it was recorded: 1e-3). */
  l2?: L2;
}

type Score = { accuracy: number; macroF1: number };

interface Baselines {
  arch: string;
  /** By probe key, like StudyResult.val. */
  randomInit: Record<string, Score>;
  pixels: Score | null;
}

const LEGACY_L2 = 1e-3;

/** Mixing probe settings in one table would compare unlike numbers. */
function checkL2(out: string, l2: L2): void {
  const other = readResults(out)
    .map((r) => r.l2 ?? LEGACY_L2)
    .find((x) => x !== l2);
  if (other !== undefined)
    throw new Error(
      `${out} holds probes fitted with --l2 ${other}, this study asks for --l2 ${l2}: use another --out, or --l2 ${other}`,
    );
}

const RESULTS = 'results.jsonl';

/**
 * One result per run (recipe, budget, seed). The file is append-only so that parallel study
 * processes never lose a line: a run given more probes later appends its new record, and the
 * last record of a run wins.
 */
export function readResults(out: string): StudyResult[] {
  const p = join(out, RESULTS);
  if (!existsSync(p)) return [];
  const byRun = new Map<string, StudyResult>();
  for (const line of readFileSync(p, 'utf8').split('\n').filter(Boolean)) {
    const r = JSON.parse(line) as StudyResult;
    const key = `${r.recipe}\u0000${r.budgetMin}\u0000${r.seed}`;
    byRun.set(key, r);
  }
  return [...byRun.values()];
}

function appendResult(out: string, r: StudyResult): void {
  appendFileSync(join(out, RESULTS), `${JSON.stringify(r)}\n`);
}

/**
 * Random-init and raw-pixel probes, computed once per encoder architecture and shared by its runs
 * (the predictor is not part of what a probe reads, so recipes that differ only there share them).
 */
function baselinesFile(out: string, encoder: string): string {
  return join(out, `baselines-${hash(encoder)}.json`);
}

function encoderArch(arch: string): string {
  const { predDim, predDepth, predHeads, ...encoder } = JSON.parse(arch) as ModelConfig;
  return JSON.stringify(encoder);
}

function readBaselines(path: string): Baselines | null {
  return existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as Baselines) : null;
}

function byReadout(rows: EvalRow[], kind: string): Record<string, Score> {
  return Object.fromEntries(
    rows
      .filter((r) => r.kind === kind && r.probe === 'linear')
      .map((r) => [r.readout!, { accuracy: r.accuracy, macroF1: r.macroF1 }]),
  );
}

export async function runStudy(o: StudyOptions): Promise<string> {
  const log = o.log ?? ((s: string) => console.error(s));
  const out = resolve(o.out);
  const allReadouts = o.readouts ?? DEFAULT_READOUTS;
  const l2 = o.l2 ?? 'auto';
  checkL2(out, l2);
  for (const budget of o.budgets) {
    for (const recipe of o.recipes) {
      for (const seed of o.seeds) {
        const key = `${recipe}-${budget}m-s${seed}`;
        const dir = join(out, key);
        const config = resolveConfig(o.preset, variantOverrides(recipe), o.config, {
          timeBudgetMin: budget,
          seed,
          holdout: true,
        });
        const depth = config.model.depth;
        const layers = o.layers ?? [depth];
        // Checked before training, not after it at export.
        for (const k of layers) checkLayers(k, depth);
        const grid = gridOf(config.model);
        // A finer readout than the recipe's patch grid (grid8 on 4×4 patches) is skipped for that recipe.
        const readouts = allReadouts.filter((r) => readoutFits(r, grid.rows, grid.cols));
        const wanted = layers.flatMap((k) => readouts.map((r) => probeKey(r, k, depth)));
        const earlier = readResults(out).find((r) => r.recipe === recipe && r.budgetMin === budget && r.seed === seed);
        if (earlier && wanted.every((w) => w in earlier.val)) {
          log(`study: ${key} done already, skipping`);
          continue;
        }
        let s = earlier ? null : finishedRun(dir);
        if (earlier) log(`study: ${key}: adding probes ${wanted.filter((w) => !(w in earlier.val)).join(', ')}`);
        else if (s) log(`study: ${key}: training finished earlier, evaluating it`);
        else {
          // An interrupted training restarts: its time budget would not mean the same after a resume.
          rmSync(dir, { recursive: true, force: true });
          log(`study: ${key}: training`);
          s = await train({
            data: o.data,
            out: dir,
            config,
            resume: false,
            engine: 'ort',
            threads: o.threads,
            backend: 'wasm',
            plain: true,
            log,
          });
        }
        const arch = JSON.stringify(config.model);
        const encoder = encoderArch(arch);
        const baselinePath = baselinesFile(out, encoder);
        const val: Record<string, Score> = { ...earlier?.val };
        for (const k of layers) {
          const missing = readouts.filter((r) => !(probeKey(r, k, depth) in val));
          if (!missing.length) continue;
          const model = join(dir, k === depth ? 'model' : `model-L${k}`);
          if (!existsSync(join(model, 'manifest.json')))
            exportRun({ run: dir, out: model, id: `${key}${k === depth ? '' : `-L${k}`}`, layers: k });
          log(`study: ${key}: validation probes (${k === depth ? 'all' : k} blocks)`);
          const b = readBaselines(baselinePath) ?? { arch: encoder, randomInit: {}, pixels: null };
          const needBaselines = !b.pixels || missing.some((r) => !(probeKey(r, k, depth) in b.randomInit));
          const ev = await runEval({
            model,
            data: o.data,
            validation: true,
            readouts: missing,
            limit: o.limit,
            seed: 0,
            l2,
            k: 20,
            temperature: 0.07,
            threads: o.threads,
            out: model,
            log,
            noBaselines: !needBaselines,
            noKnn: true,
            noAttentive: true,
          });
          for (const [r, score] of Object.entries(byReadout(ev.rows, 'ijepa')))
            val[probeKey(r as Readout, k, depth)] = score;
          if (needBaselines) {
            // Re-read: a parallel study process may have added other probes meanwhile.
            const now = readBaselines(baselinePath) ?? b;
            for (const [r, score] of Object.entries(byReadout(ev.rows, 'random-init')))
              now.randomInit[probeKey(r as Readout, k, depth)] = score;
            now.pixels = pixelsRow(ev.rows);
            writeFileSync(baselinePath, JSON.stringify(now, null, 2));
          }
        }
        if (earlier) appendResult(out, { ...earlier, val });
        else {
          const d = s!.diagnostics;
          const result: StudyResult = {
            recipe,
            budgetMin: budget,
            seed,
            steps: s!.steps,
            imagesSeen: s!.imagesSeen,
            elapsedSec: s!.elapsedSec,
            finalLoss: s!.finalLoss,
            featStd: d?.featStd,
            rankMe: d?.rankMe,
            collapsed: d ? collapseWarning(d, config.model.dim) : null,
            val,
            arch,
            l2,
          };
          appendResult(out, result);
        }
        await writeReport(out);
      }
    }
  }
  return writeReport(out);
}

/** The summary of a run whose schedule completed (its evaluation was interrupted), else null. */
function finishedRun(dir: string): RunSummary | null {
  const ck = join(dir, CHECKPOINT_FILE);
  if (!existsSync(ck)) return null;
  const meta = readCheckpoint(ck).meta;
  const state = meta.state as {
    step: number;
    imagesSeen: number;
    elapsedSec: number;
    plan: { totalSteps: number } | null;
  };
  const budgetSec = 60 * ((meta.config as { timeBudgetMin?: number }).timeBudgetMin ?? Infinity);
  const done = (state.plan && state.step >= state.plan.totalSteps) || state.elapsedSec >= budgetSec;
  if (!done || !existsSync(join(dir, 'model', 'manifest.json'))) return null;
  const lines = readFileSync(join(dir, METRICS_FILE), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l));
  const diag = [...lines].reverse().find((l) => 'featStd' in l);
  return {
    steps: state.step,
    imagesSeen: state.imagesSeen,
    elapsedSec: state.elapsedSec,
    finalLoss: lines.at(-1)?.loss ?? NaN,
    stoppedBy: 'steps',
    diagnostics: diag && {
      featStd: diag.featStd,
      featStdHealthy: diag.featStdHealthy,
      rankMe: diag.rankMe,
      emaGap: diag.emaGap,
      zeroLoss: diag.zeroLoss,
    },
  };
}

function pixelsRow(rows: EvalRow[]) {
  const r = rows.find((x) => x.kind === 'pixels')!;
  return { accuracy: r.accuracy, macroF1: r.macroF1 };
}

function hash(s: string): string {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return (h >>> 0).toString(16);
}

const pct = (x: number) => (100 * x).toFixed(2);

/** mean ± half the range over seeds. */
function stat(xs: number[]): { mean: number; spread: number; text: string } {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const spread = xs.length > 1 ? (Math.max(...xs) - Math.min(...xs)) / 2 : 0;
  return { mean, spread, text: xs.length > 1 ? `${pct(mean)} ± ${pct(spread)}` : pct(mean) };
}

/** Probe keys in table order: all blocks first, then shallower layers; readouts in READOUTS order. */
function probeOrder(keys: Iterable<string>): string[] {
  const parse = (k: string) => {
    const m = /^L(\d+)\/(.+)$/.exec(k);
    return { layer: m ? Number(m[1]) : Infinity, readout: m ? m[2] : k };
  };
  return [...new Set(keys)].sort((a, b) => {
    const pa = parse(a),
      pb = parse(b);
    return pb.layer - pa.layer || READOUTS.indexOf(pa.readout as Readout) - READOUTS.indexOf(pb.readout as Readout);
  });
}

const probeLabel = (k: string) => k.replace(/^L(\d+)\//, 'block $1, ');

export async function writeReport(out: string): Promise<string> {
  const results = readResults(out);
  const baselines = new Map<string, Baselines>();
  for (const r of results) {
    const encoder = encoderArch(r.arch);
    const b = baselines.has(encoder) ? null : readBaselines(baselinesFile(out, encoder));
    if (b) baselines.set(encoder, b);
  }
  const groups = new Map<string, StudyResult[]>();
  for (const r of results) {
    const k = `${r.budgetMin}\u0000${r.recipe}`;
    groups.set(k, [...(groups.get(k) ?? []), r]);
  }
  const probes = probeOrder(results.flatMap((r) => Object.keys(r.val)));
  const lines = [
    `Validation split (1/6 of the labeled training images, never seen in pre-training); linear probes on frozen features (probe = which encoder blocks, which readout; ${describeL2(results[0]?.l2 ?? LEGACY_L2)}). Accuracy in %, mean ± half-range over seeds.`,
    '',
    `| budget | recipe | seeds | images seen | final loss | ${probes.map((p) => `val acc, ${probeLabel(p)}`).join(' | ')} | Δ vs random-init (same probe, best) | Δ vs raw pixels (best) | featStd / RankMe | collapse |`,
    `| --- | --- | --- | --- | --- | ${probes.map(() => '---').join(' | ')} | --- | --- | --- | --- |`,
  ];
  const bars: Bar[] = [];
  for (const rs of [...groups.values()].sort(
    (a, b) => a[0].budgetMin - b[0].budgetMin || a[0].recipe.localeCompare(b[0].recipe),
  )) {
    const r0 = rs[0];
    const b = baselines.get(encoderArch(r0.arch));
    const cells = new Map(
      probes.filter((p) => rs.every((r) => p in r.val)).map((p) => [p, stat(rs.map((r) => r.val[p].accuracy))]),
    );
    const [bestKey, best] = [...cells].reduce((x, y) => (y[1].mean > x[1].mean ? y : x));
    const vsRandom = b?.randomInit[bestKey];
    const dRandom = vsRandom ? `${(100 * (best.mean - vsRandom.accuracy)).toFixed(2)} (${probeLabel(bestKey)})` : '-';
    const dPixels = b?.pixels ? (100 * (best.mean - b.pixels.accuracy)).toFixed(2) : '-';
    const collapsed = rs.filter((r) => r.collapsed).length;
    lines.push(
      `| ${r0.budgetMin} min | ${r0.recipe} | ${rs.map((r) => r.seed).join(', ')} | ${Math.round(stat(rs.map((r) => r.imagesSeen)).mean)} | ${stat(rs.map((r) => r.finalLoss)).mean.toFixed(4)} | ${probes.map((p) => cells.get(p)?.text ?? '-').join(' | ')} | ${dRandom} | ${dPixels} | ${stat(rs.map((r) => r.featStd ?? NaN)).mean.toFixed(4)} / ${stat(rs.map((r) => r.rankMe ?? NaN)).mean.toFixed(1)} | ${collapsed ? `${collapsed} collapsed` : 'healthy'} |`,
    );
    bars.push({
      label: `${r0.recipe}, ${r0.budgetMin} min (${probeLabel(bestKey)})`,
      value: 100 * best.mean,
      spread: 100 * best.spread,
      color: collapsed ? '#ff7f0e' : undefined,
    });
    if (vsRandom)
      bars.push({ label: 'random-init, same probe', value: 100 * vsRandom.accuracy, spread: 0, color: '#bbbbbb' });
  }
  const baseProbes = probeOrder([...baselines.values()].flatMap((b) => Object.keys(b.randomInit)));
  lines.push(
    '',
    'Baselines on the same validation split:',
    '',
    `| architecture | ${baseProbes.map((p) => `random-init, ${probeLabel(p)}`).join(' | ')} | raw pixels |`,
    `| --- | ${baseProbes.map(() => '---').join(' | ')} | --- |`,
  );
  for (const b of baselines.values()) {
    const a = JSON.parse(b.arch);
    lines.push(
      `| ${a.imageSize}px, patch ${a.patchSize}, d${a.dim}×${a.depth} | ${baseProbes.map((p) => (b.randomInit[p] ? pct(b.randomInit[p].accuracy) : '-')).join(' | ')} | ${b.pixels ? pct(b.pixels.accuracy) : '-'} |`,
    );
  }
  const md = `${lines.join('\n')}\n`;
  writeFileSync(join(out, 'study.md'), md);
  const pixels = [...baselines.values()].map((b) => b.pixels?.accuracy).filter((x): x is number => x !== undefined);
  if (bars.length) {
    // Raw pixels do not depend on the architecture (same images, same preprocessing).
    const hl = pixels.length ? [{ value: 100 * pixels[0], label: 'raw pixels', color: '#d62728' }] : [];
    await writePng(
      barChartSvg('Validation accuracy of frozen linear probes (%); orange = collapsed', bars, hl),
      join(out, 'study.png'),
    );
  }
  return md;
}
