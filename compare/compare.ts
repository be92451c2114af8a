/**
 * `ijepa compare`: the head-to-head on one backbone, one labeled set and one fine-tuning budget —
 * the same architecture fine-tuned from random init and from MAE, against the I-JEPA encoder
 * frozen under a linear probe and under a stronger (attentive) head — with top-1 and macro-F1,
 * the budgets, seeds and hardware, as Markdown and JSON. Every row reads the same seeded labeled
 * subset and is scored on the same images. Rows are saved as they finish: a rerun with the same
 * arguments skips those done (and a fine-tune cut short resumes from its checkpoint).
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { cpuName } from '../runtime/devices.ts';
import { join, resolve } from 'node:path';
import { readPackage } from '../format/package.ts';
import type { Manifest } from '../format/manifest.ts';
import { runEval } from '../eval/eval.ts';
import { runFinetune, type FinetuneResult } from '../finetune/finetune.ts';
import { describeTest, labeledSplits, type SplitOptions } from '../eval/probe.ts';

export interface CompareOptions extends Omit<SplitOptions, 'limit'> {
  /** The masked-prediction (JEPA) package whose frozen encoder is probed. */
  ijepa: string;
  /** The MAE package that is fine-tuned. */
  mae: string;
  /** More packages probed frozen beside the I-JEPA one (e.g. LeJEPA). */
  also?: string[];
  /** Labeled training images every row learns from (seeded subset; the reference: 5,000). */
  labeled: number;
  /** The fine-tuning budget of every fine-tuned row: minutes (the cosine fitted to it) or epochs. */
  finetuneMinutes?: number;
  finetuneEpochs?: number;
  /** The frozen encoders' attentive probe epochs (eval's default otherwise). */
  attentiveEpochs?: number;
  threads: number;
  out: string;
  plain?: boolean;
  log?: (s: string) => void;
}

export type Evaluation = 'full fine-tune' | 'frozen + linear probe' | 'frozen + attentive probe';

export interface CompareRow {
  key: string;
  method: string;
  /** The package the row starts from (random init: the I-JEPA package's architecture). */
  package: string;
  evaluation: Evaluation;
  accuracy: number;
  macroF1: number;
  /** Wall seconds of the row: fine-tuning (not its scoring), or the probe's fit and scoring with feature extraction. */
  seconds: number;
  /** How the row was trained, in words (epochs, images, the probe's chosen settings). */
  detail: string;
}

interface Pretraining {
  role: string;
  package: string;
  id: string;
  objective: string;
  recipe: string;
  steps: number;
  imagesSeen: number;
  minutes: number;
  hardware: string;
  seed: number;
}

export interface CompareReport {
  data: string;
  testSplit: string;
  scored: string;
  labeled: number;
  testCount: number;
  seed: number;
  finetuneBudget: string;
  pretrainingBudget: string;
  hardware: string;
  pretraining: Pretraining[];
  rows: CompareRow[];
  /** The options the rows were made with: a rerun with others starts over. */
  settings: Record<string, unknown>;
}

const NAME: Record<string, string> = { ijepa: 'I-JEPA', lejepa: 'LeJEPA', hybrid: 'I-JEPA + LeJEPA', mae: 'MAE' };

function nameOf(m: Manifest): string {
  const o = m.training.objective ?? 'ijepa';
  return NAME[o] ?? o;
}

function pretrainingOf(role: string, dir: string, m: Manifest): Pretraining {
  const t = m.training;
  return {
    role,
    package: dir,
    id: m.id,
    objective: t.objective ?? 'ijepa',
    recipe: t.recipe ?? 'unrecorded',
    steps: t.steps,
    imagesSeen: t.imagesSeen,
    minutes: t.elapsedSec / 60,
    hardware: t.hardware ?? 'unrecorded',
    seed: t.seed,
  };
}

/**
 * Whether the pre-trainings had the same budget: the same wall time (within 5%) on the same
 * hardware, or the same images seen (within 1%); otherwise what differs.
 */
export function budgetVerdict(p: Pretraining[]): string {
  const spread = (xs: number[]) => (Math.max(...xs) - Math.min(...xs)) / Math.max(...xs, Number.MIN_VALUE);
  const minutes = p.map((x) => x.minutes);
  const images = p.map((x) => x.imagesSeen);
  const sameHardware = new Set(p.map((x) => x.hardware)).size === 1;
  const list = (f: (x: Pretraining) => string) => p.map((x) => `${x.role} ${f(x)}`).join(', ');
  if (spread(minutes) <= 0.05 && sameHardware)
    return `equal time: ${list((x) => `${x.minutes.toFixed(1)} min`)} on the same hardware (${p[0].hardware})`;
  if (spread(images) <= 0.01) return `equal images seen: ${list((x) => `${x.imagesSeen}`)}`;
  return `UNEQUAL: ${list((x) => `${x.minutes.toFixed(1)} min, ${x.imagesSeen} images on ${x.hardware}`)}`;
}

const pct = (x: number) => `${(100 * x).toFixed(2)}%`;

export async function runCompare(o: CompareOptions): Promise<{ report: CompareReport; markdown: string }> {
  const log = o.log ?? ((s: string) => console.error(s));
  if (!o.finetuneMinutes && !o.finetuneEpochs)
    throw new Error('compare: give a fine-tuning budget (minutes or epochs)');
  const packages = { ijepa: readPackage(o.ijepa).manifest, mae: readPackage(o.mae).manifest };
  const also = (o.also ?? []).map((dir) => ({ dir, manifest: readPackage(dir).manifest }));
  const arch = (m: Manifest) => JSON.stringify({ ...m.architecture, preset: undefined, predDim: 0, predDepth: 0 });
  for (const p of [packages.mae, ...also.map((a) => a.manifest)])
    if (arch(p) !== arch(packages.ijepa))
      throw new Error(`compare: ${p.id} is not the I-JEPA package's architecture: a head-to-head needs one backbone`);
  const sp = labeledSplits({ ...o, limit: o.labeled });
  mkdirSync(o.out, { recursive: true });
  const split = {
    data: o.data,
    test: o.test,
    validation: o.validation,
    seed: o.seed,
    limit: o.labeled,
    testLimit: o.testLimit,
  };
  const settings = {
    ...split,
    ijepa: packages.ijepa.contentHash,
    mae: packages.mae.contentHash,
    also: also.map((a) => a.manifest.contentHash),
    finetuneMinutes: o.finetuneMinutes ?? null,
    finetuneEpochs: o.finetuneEpochs ?? null,
    attentiveEpochs: o.attentiveEpochs ?? null,
  };
  const jsonPath = join(o.out, 'compare.json');
  const done = previousRows(jsonPath, settings);
  const pretraining = [
    pretrainingOf('I-JEPA', o.ijepa, packages.ijepa),
    pretrainingOf('MAE', o.mae, packages.mae),
    ...also.map((a) => pretrainingOf(nameOf(a.manifest), a.dir, a.manifest)),
  ];
  const report: CompareReport = {
    data: o.data,
    testSplit: sp.testSplit,
    scored: describeTest(sp),
    labeled: sp.trainItems.length,
    testCount: sp.testItems.length,
    seed: o.seed,
    finetuneBudget: o.finetuneMinutes
      ? `${o.finetuneMinutes} min of fine-tuning per fine-tuned row (the cosine schedule fitted to it)`
      : `${o.finetuneEpochs} epochs of fine-tuning per fine-tuned row`,
    pretrainingBudget: budgetVerdict(pretraining.slice(0, 2)),
    hardware: `${cpuName()}, ${availableParallelism()} cores; onnxruntime on the CPU, ${o.threads} thread(s)`,
    pretraining,
    rows: [],
    settings,
  };
  const save = () => {
    writeFileSync(jsonPath, `${JSON.stringify(report, null, 2)}\n`);
    const md = renderMarkdown(report);
    writeFileSync(join(o.out, 'compare.md'), md);
    return md;
  };
  const row = async (key: string, make: () => Promise<Omit<CompareRow, 'key'>>) => {
    const kept = done.get(key);
    if (kept) log(`${kept.method}, ${kept.evaluation}: done before (${pct(kept.accuracy)})`);
    const r = kept ?? { key, ...(await make()) };
    report.rows.push(r);
    if (!kept) log(`${r.method}, ${r.evaluation}: ${pct(r.accuracy)} top-1, ${pct(r.macroF1)} macro-F1`);
    save();
  };

  const finetune = async (method: string, pkg: string, dir: string, randomInit: boolean) => {
    const out = join(o.out, dir);
    const r: FinetuneResult = await runFinetune({
      ...split,
      model: pkg,
      out,
      randomInit,
      // Layer-wise decay protects pre-trained lower layers; from random init there are none, and
      // the from-scratch recipes (DeiT, MAE's scratch baseline) use none.
      ...(randomInit ? { layerDecay: 1 } : {}),
      ...(o.finetuneMinutes ? { timeBudgetMin: o.finetuneMinutes } : { epochs: o.finetuneEpochs }),
      threads: o.threads,
      resume: existsSync(join(out, 'finetune.ckpt')),
      plain: o.plain,
      log,
    });
    return {
      method,
      package: pkg,
      evaluation: 'full fine-tune' as const,
      accuracy: r.accuracy,
      macroF1: r.macroF1,
      seconds: r.seconds,
      detail: `${r.epochs.toFixed(1)} epochs, ${r.imagesSeen} images, ${r.steps} steps (${r.imagesPerSec.toFixed(0)} img/s), layer decay ${r.settings.layerDecay}; package ${dir}`,
    };
  };
  await row('finetune-random', () => finetune('random init', o.ijepa, 'finetune-random-init', true));
  await row('finetune-mae', () => finetune('MAE', o.mae, 'finetune-mae', false));

  const frozen = async (key: string, dir: string, m: Manifest) => {
    const keys = [`${key}-linear`, `${key}-attentive`];
    if (keys.every((k) => done.has(k))) {
      for (const k of keys) await row(k, async () => done.get(k)!);
      return;
    }
    const t0 = performance.now();
    const e = await runEval({
      ...split,
      model: dir,
      noBaselines: true,
      noKnn: true,
      readouts: ['mean'],
      attentiveEpochs: o.attentiveEpochs,
      l2: 'auto',
      k: 20,
      temperature: 0.07,
      threads: o.threads,
      out: join(o.out, `frozen-${key}`),
      log,
    });
    const seconds = (performance.now() - t0) / 1000;
    for (const r of e.rows) {
      const linear = r.probe === 'linear';
      await row(linear ? keys[0] : keys[1], async () => ({
        method: nameOf(m),
        package: dir,
        evaluation: linear ? 'frozen + linear probe' : 'frozen + attentive probe',
        accuracy: r.accuracy,
        macroF1: r.macroF1,
        seconds: r.seconds,
        detail: linear
          ? `mean-pooled, standardised; L2 ${r.l2} chosen on a fifth of the labeled images`
          : `lr ${r.lr}, weight decay ${r.weightDecay} chosen on a fifth of the labeled images, ${r.epochs} epochs (the evaluation of both heads took ${seconds.toFixed(0)} s)`,
      }));
    }
  };
  await frozen('ijepa', o.ijepa, packages.ijepa);
  await frozen('mae', o.mae, packages.mae);
  for (const [i, a] of also.entries()) await frozen(`also${i}`, a.dir, a.manifest);
  return { report, markdown: save() };
}

/** Rows of an earlier run with the same settings, by key; none if it was asked something else. */
function previousRows(path: string, settings: Record<string, unknown>): Map<string, CompareRow> {
  if (!existsSync(path)) return new Map();
  const before = JSON.parse(readFileSync(path, 'utf8')) as CompareReport;
  if (JSON.stringify(before.settings) !== JSON.stringify(settings))
    throw new Error(
      `compare: ${resolve(path)} holds rows made with other arguments; choose another --out or remove it`,
    );
  return new Map(before.rows.map((r) => [r.key, r]));
}

export function renderMarkdown(r: CompareReport): string {
  const lines = [
    `# Head-to-head on ${r.data}`,
    '',
    `- Labeled training images: **${r.labeled}** (a seeded subset, seed ${r.seed}); scored on ${r.scored} — ${r.testSplit}.`,
    `- Pre-training budget: ${r.pretrainingBudget}.`,
    `- Fine-tuning budget: ${r.finetuneBudget}.`,
    `- Hardware: ${r.hardware}.`,
    '',
    '| method | evaluation | top-1 | macro-F1 | how |',
    '| --- | --- | --- | --- | --- |',
    ...r.rows.map((x) => `| ${x.method} | ${x.evaluation} | ${pct(x.accuracy)} | ${pct(x.macroF1)} | ${x.detail} |`),
    '',
    '## Pre-training',
    '',
    '| role | package | objective | recipe | minutes | images seen | steps | seed | hardware |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...r.pretraining.map(
      (p) =>
        `| ${p.role} | ${p.id} | ${p.objective} | ${p.recipe} | ${p.minutes.toFixed(1)} | ${p.imagesSeen} | ${p.steps} | ${p.seed} | ${p.hardware} |`,
    ),
    '',
  ];
  return lines.join('\n');
}
