/**
 * `ijepa study`: the small-budget recipe study. For each budget × recipe × seed: pre-train with
 * the validation split held out (data/split.ts), export, and score frozen linear probes on that
 * validation split (the test split is never read), next to random-init and raw-pixel probes
 * computed once per architecture. Results append to results.jsonl (several study processes may
 * share one directory, e.g. one per core); study.md and study.png are rebuilt from all of them.
 */
import { appendFileSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { resolveConfig, type ConfigOverrides } from './config.ts';
import { recipeOverrides, type RecipeName } from './recipes.ts';
import type { PresetName } from './model/presets.ts';
import { CHECKPOINT_FILE, METRICS_FILE, train, type RunSummary } from './loop.ts';
import { readCheckpoint } from './checkpoint.ts';
import { exportRun } from './export/export.ts';
import { runEval, type EvalRow } from './eval.ts';
import { collapseWarning } from './diagnostics.ts';
import { barChartSvg, writePng } from './plot.ts';
import type { Readout } from '../serve/format/readout.ts';

export interface StudyOptions {
  data: string;
  out: string;
  preset: PresetName;
  recipes: RecipeName[];
  budgets: number[];
  seeds: number[];
  threads?: number;
  /** Overrides applied after each recipe (e.g. a smaller model or batch). */
  config?: ConfigOverrides;
  /** Labeled training images for the probes (validation split stays whole). */
  limit?: number;
  log?: (s: string) => void;
}

const READOUTS: Readout[] = ['mean', 'grid2'];

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
  /** Validation accuracy / macro-F1 by readout. */
  val: Record<string, { accuracy: number; macroF1: number }>;
  arch: string;
}

interface Baselines {
  arch: string;
  randomInit: Record<string, { accuracy: number; macroF1: number }>;
  pixels: { accuracy: number; macroF1: number };
}

const RESULTS = 'results.jsonl';

export function readResults(out: string): StudyResult[] {
  const p = join(out, RESULTS);
  return existsSync(p) ? readFileSync(p, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as StudyResult) : [];
}

function byReadout(rows: EvalRow[], kind: string) {
  return Object.fromEntries(rows.filter((r) => r.kind === kind).map((r) => [r.readout!, { accuracy: r.accuracy, macroF1: r.macroF1 }]));
}

export async function runStudy(o: StudyOptions): Promise<string> {
  const log = o.log ?? ((s: string) => console.error(s));
  const out = resolve(o.out);
  for (const budget of o.budgets) {
    for (const recipe of o.recipes) {
      for (const seed of o.seeds) {
        const key = `${recipe}-${budget}m-s${seed}`;
        if (readResults(out).some((r) => r.recipe === recipe && r.budgetMin === budget && r.seed === seed)) {
          log(`study: ${key} done already, skipping`);
          continue;
        }
        const dir = join(out, key);
        const config = resolveConfig(o.preset, recipeOverrides(recipe), o.config, { timeBudgetMin: budget, seed, holdout: true });
        let s = finishedRun(dir);
        if (s) log(`study: ${key}: training finished earlier, evaluating it`);
        else {
          // An interrupted training restarts: its time budget would not mean the same after a resume.
          rmSync(dir, { recursive: true, force: true });
          log(`study: ${key}: training`);
          s = await train({ data: o.data, out: dir, config, resume: false, engine: 'ort', threads: o.threads, backend: 'wasm', plain: true, log });
        }
        const model = join(dir, 'model');
        if (!existsSync(join(model, 'manifest.json'))) exportRun({ run: dir, out: model, id: key });
        const arch = JSON.stringify(config.model);
        const evalOpts = { model, data: o.data, validation: true, readouts: READOUTS, limit: o.limit, seed: 0, l2: 1e-3, k: 20, temperature: 0.07, threads: o.threads, out: dir, log };
        log(`study: ${key}: validation probes`);
        const baselinePath = join(out, `baselines-${hash(arch)}.json`);
        const needBaselines = !existsSync(baselinePath);
        const ev = await runEval({ ...evalOpts, noBaselines: !needBaselines, noKnn: true });
        if (needBaselines) {
          const b: Baselines = { arch, randomInit: byReadout(ev.rows, 'random-init'), pixels: pixelsRow(ev.rows) };
          writeFileSync(baselinePath, JSON.stringify(b, null, 2));
        }
        const d = s.diagnostics;
        const result: StudyResult = {
          recipe, budgetMin: budget, seed, steps: s.steps, imagesSeen: s.imagesSeen, elapsedSec: s.elapsedSec, finalLoss: s.finalLoss,
          featStd: d?.featStd, rankMe: d?.rankMe, collapsed: d ? collapseWarning(d, config.model.dim) : null,
          val: byReadout(ev.rows, 'ijepa'), arch,
        };
        appendFileSync(join(out, RESULTS), JSON.stringify(result) + '\n');
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
  const state = meta.state as { step: number; imagesSeen: number; elapsedSec: number; plan: { totalSteps: number } | null };
  const budgetSec = 60 * ((meta.config as { timeBudgetMin?: number }).timeBudgetMin ?? Infinity);
  const done = (state.plan && state.step >= state.plan.totalSteps) || state.elapsedSec >= budgetSec;
  if (!done || !existsSync(join(dir, 'model', 'manifest.json'))) return null;
  const lines = readFileSync(join(dir, METRICS_FILE), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
  const diag = [...lines].reverse().find((l) => 'featStd' in l);
  return {
    steps: state.step, imagesSeen: state.imagesSeen, elapsedSec: state.elapsedSec, finalLoss: lines.at(-1)?.loss ?? NaN, stoppedBy: 'steps',
    diagnostics: diag && { featStd: diag.featStd, featStdHealthy: diag.featStdHealthy, rankMe: diag.rankMe, emaGap: diag.emaGap, zeroLoss: diag.zeroLoss },
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

export async function writeReport(out: string): Promise<string> {
  const results = readResults(out);
  const baselines = new Map<string, Baselines>();
  for (const r of results) {
    const p = join(out, `baselines-${hash(r.arch)}.json`);
    if (!baselines.has(r.arch) && existsSync(p)) baselines.set(r.arch, JSON.parse(readFileSync(p, 'utf8')));
  }
  const groups = new Map<string, StudyResult[]>();
  for (const r of results) {
    const k = `${r.budgetMin}\u0000${r.recipe}`;
    groups.set(k, [...(groups.get(k) ?? []), r]);
  }
  const lines = [
    `Validation split (1/6 of the labeled training images, never seen in pre-training); linear probes on frozen features. Accuracy in %, mean ± half-range over seeds.`,
    '',
    '| budget | recipe | seeds | images seen | final loss | val acc, mean readout | val acc, grid2 readout | Δ vs random-init (same readout, best) | Δ vs raw pixels (best) | featStd / RankMe | collapse |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  const bars: { label: string; value: number; spread: number }[] = [];
  for (const rs of [...groups.values()].sort((a, b) => a[0].budgetMin - b[0].budgetMin || a[0].recipe.localeCompare(b[0].recipe))) {
    const r0 = rs[0];
    const b = baselines.get(r0.arch);
    const mean = stat(rs.map((r) => r.val.mean.accuracy));
    const grid = stat(rs.map((r) => r.val.grid2.accuracy));
    const best = grid.mean >= mean.mean ? { s: grid, ro: 'grid2' } : { s: mean, ro: 'mean' };
    const dRandom = b ? `${(100 * (best.s.mean - b.randomInit[best.ro].accuracy)).toFixed(2)} (${best.ro})` : '-';
    const dPixels = b ? (100 * (best.s.mean - b.pixels.accuracy)).toFixed(2) : '-';
    const collapsed = rs.filter((r) => r.collapsed).length;
    lines.push(`| ${r0.budgetMin} min | ${r0.recipe} | ${rs.map((r) => r.seed).join(', ')} | ${Math.round(stat(rs.map((r) => r.imagesSeen)).mean)} | ${stat(rs.map((r) => r.finalLoss)).mean.toFixed(4)} | ${mean.text} | ${grid.text} | ${dRandom} | ${dPixels} | ${stat(rs.map((r) => r.featStd ?? NaN)).mean.toFixed(4)} / ${stat(rs.map((r) => r.rankMe ?? NaN)).mean.toFixed(1)} | ${collapsed ? `${collapsed} collapsed` : 'healthy'} |`);
    bars.push({ label: `${r0.recipe}, ${r0.budgetMin} min (${best.ro})`, value: 100 * best.s.mean, spread: 100 * best.s.spread });
  }
  lines.push('', 'Baselines on the same validation split:', '', '| architecture | random-init, mean | random-init, grid2 | raw pixels |', '| --- | --- | --- | --- |');
  for (const b of baselines.values()) {
    const a = JSON.parse(b.arch);
    lines.push(`| ${a.imageSize}px, patch ${a.patchSize}, d${a.dim}×${a.depth} | ${pct(b.randomInit.mean.accuracy)} | ${pct(b.randomInit.grid2.accuracy)} | ${pct(b.pixels.accuracy)} |`);
  }
  const md = lines.join('\n') + '\n';
  writeFileSync(join(out, 'study.md'), md);
  const b0 = [...baselines.values()][0];
  if (bars.length) {
    const hl = b0 ? [
      { value: 100 * b0.pixels.accuracy, label: 'raw pixels', color: '#d62728' },
      { value: 100 * Math.max(b0.randomInit.mean.accuracy, b0.randomInit.grid2.accuracy), label: 'random-init (best readout)', color: '#2ca02c' },
    ] : [];
    await writePng(barChartSvg('Validation accuracy of frozen linear probes (%)', bars, hl), join(out, 'study.png'));
  }
  return md;
}
