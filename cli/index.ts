/** `ijepa` command line. Each command imports its implementation lazily, so `--help` stays fast. */
import { availableParallelism } from 'node:os';
import { Command, InvalidArgumentError, Option } from 'commander';
import { presetNames, type PresetName } from '../model/presets.ts';
import type { ConfigOverrides } from '../train/config.ts';
import { READOUTS } from '../format/readout.ts';
import { DEVICES } from '../runtime/device.ts';
import { parseShard } from '../serve/shard.ts';

const READOUT_CHOICES = [...READOUTS];

function int(name: string, min = 1) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min)
      throw new InvalidArgumentError(`${name} must be an integer ≥ ${min}, got '${v}'`);
    return n;
  };
}

/** Bounded because body-parser makes the whole JSON body one string, and V8 strings stop near 512 MiB. */
function maxRequestBytes(v: string): number {
  const n = int('--max-request-bytes', 1024)(v);
  if (n > 256 * 1024 * 1024)
    throw new InvalidArgumentError(`--max-request-bytes must be at most 268435456 (256 MiB), got '${v}'`);
  return n;
}

function positive(name: string) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`${name} must be a positive number, got '${v}'`);
    return n;
  };
}

function l2Option(v: string): number | 'auto' {
  if (v === 'auto') return v;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`--l2 must be a number ≥ 0 or 'auto', got '${v}'`);
  return n;
}

/**
 * One rule for the onnxruntime threads of the commands that run graphs offline (train, probe,
 * eval, figures, study, index): --threads, else all cores. `serve` keeps its own default (see there).
 */
const threadsOption = (what: string) =>
  new Option('--threads <n>', `onnxruntime intra-op threads for ${what} (default: all cores)`).argParser(
    int('--threads'),
  );
const threadsOf = (given: number | undefined): number => given ?? availableParallelism();

const deviceOption = (what: string) =>
  new Option('--device <name>', `where ${what} runs (\`ijepa devices\` lists what this machine has)`)
    .choices([...DEVICES])
    .default('cpu');

/** The attentive probe's knobs, shared by `probe --attentive` and `eval`. */
const attentiveEpochsOption = () =>
  new Option('--attentive-epochs <n>', 'epochs of each attentive-probe fit')
    .argParser(int('--attentive-epochs', 1))
    .default(10);
const attentiveHeadsOption = () =>
  new Option(
    '--attentive-heads <n>',
    "the attentive probe's heads, one learned query each (default: embedding width / 8)",
  ).argParser(int('--attentive-heads', 1));

export function buildCli(): Command {
  const program = new Command('ijepa')
    .description('I-JEPA: learn image features without labels, and serve them')
    .showHelpAfterError()
    .configureOutput({ outputError: (s, write) => write(s) });

  program
    .command('train')
    .description('pre-train an encoder with I-JEPA; writes checkpoints, config and metrics to --out')
    .requiredOption('--data <path>', 'image folder, STL-10 binary directory, or IDX file/directory')
    .requiredOption('--out <dir>', 'run directory (e.g. runs/my-run)')
    .addOption(new Option('--preset <name>', 'model preset').choices(presetNames).default('vit-tiny'))
    .option(
      '--recipe <name>',
      "training recipe (train/recipes/): default (LeJEPA's minimal recipe, chosen on CIFAR-10 validation), lejepa (the same), hybrid (I-JEPA + LeJEPA), ijepa (I-JEPA with SIGReg), mae (masked autoencoder), reference (published I-JEPA)",
      'default',
    )
    .option('--config <file>', 'JSON file overriding any config field (docs/training.md)')
    .option('--holdout', 'pre-train without the validation split (so `eval --validation` is clean)')
    .option('--epochs <n>', 'epochs (sets the schedule length)', positive('--epochs'))
    .option('--batch <n>', 'images per micro-batch', int('--batch'))
    .option('--accum <k>', 'micro-batches per optimizer step (gradient accumulation)', int('--accum'))
    .option('--lr <x>', 'peak learning rate', positive('--lr'))
    .option('--seed <n>', 'random seed', int('--seed', 0))
    .option('--max-steps <n>', 'stop after n optimizer steps (the schedule is compressed to fit)', int('--max-steps'))
    .option(
      '--time-budget <minutes>',
      'wall-clock budget; the schedule is fitted to it after a few timed steps',
      positive('--time-budget'),
    )
    .addOption(
      new Option('--engine <name>', 'training engine: onnxruntime (fast) or TF.js (reference, autodiff)')
        .choices(['ort', 'tfjs'])
        .default('ort'),
    )
    .addOption(threadsOption('the onnxruntime engine on the CPU'))
    .addOption(deviceOption('the onnxruntime engine (webgpu: weights, moments and EMA stay on the GPU)'))
    .addOption(
      new Option('--backend <name>', 'TF.js backend (--engine tfjs)')
        .choices(['wasm', 'cpu', 'tensorflow'])
        .default('wasm'),
    )
    .option('--resume', 'continue the checkpoint in --out (with either engine)', false)
    .option('--plain', 'log lines instead of a progress bar (default when stderr is not a TTY)')
    .action(async (opts) => {
      const { resolveConfig, readConfigFile } = await import('../train/config.ts');
      const { recipeOverrides } = await import('../train/recipes.ts');
      const { train } = await import('../train/loop.ts');
      const flags: ConfigOverrides = {
        epochs: opts.epochs,
        batch: opts.batch,
        accum: opts.accum,
        seed: opts.seed,
        maxSteps: opts.maxSteps,
        timeBudgetMin: opts.timeBudget,
        holdout: opts.holdout,
        optim: opts.lr !== undefined ? { lr: opts.lr } : undefined,
      };
      for (const k of Object.keys(flags) as (keyof ConfigOverrides)[]) if (flags[k] === undefined) delete flags[k];
      const config = resolveConfig(
        opts.preset as PresetName,
        recipeOverrides(opts.recipe),
        opts.config ? readConfigFile(opts.config) : undefined,
        flags,
      );
      const summary = await train({
        data: opts.data,
        out: opts.out,
        config,
        resume: opts.resume,
        backend: opts.backend,
        engine: opts.engine,
        threads: threadsOf(opts.threads),
        device: opts.device,
        plain: opts.plain ?? !process.stderr.isTTY,
      });
      console.log(JSON.stringify(summary, null, 2));
    });

  program
    .command('export')
    .description("write a run's EMA target encoder (and predictor) as a model package: ONNX graphs + manifest.json")
    .requiredOption('--run <dir>', 'run directory written by `ijepa train`')
    .requiredOption('--out <dir>', 'package directory (e.g. models/my-model)')
    .option('--id <name>', 'model id (default: the --out directory name)')
    .option(
      '--layers <k>',
      'keep the first k encoder blocks (probe an intermediate layer; no predictor then)',
      int('--layers'),
    )
    .action(async (opts) => {
      const { exportRun } = await import('../train/export.ts');
      const manifest = exportRun({ run: opts.run, out: opts.out, id: opts.id, layers: opts.layers });
      console.log(
        JSON.stringify({ id: manifest.id, contentHash: manifest.contentHash, files: manifest.files }, null, 2),
      );
    });

  program
    .command('probe')
    .description(
      'fit a linear probe on frozen features (or an attentive one on the patch tokens); prints accuracy and macro-F1, writes probe.json into the package',
    )
    .requiredOption('--model <dir>', 'model package (from `ijepa export`)')
    .requiredOption('--data <path>', 'labeled training data (image class folders, STL-10, IDX)')
    .option(
      '--test <path>',
      "labeled test data (default: the source's test split, else the validation split of --data)",
    )
    .option(
      '--l2 <x|auto>',
      'L2 penalty on the weights, or auto: chosen on a seeded 20% of the training images',
      l2Option,
      1e-3,
    )
    .option('--limit <n>', 'use at most n training images (seeded subsample)', int('--limit'))
    .option(
      '--test-limit <n>',
      'score on at most n test images (seeded subsample; default: the whole split)',
      int('--test-limit'),
    )
    .option('--seed <n>', 'seed for splits and subsamples', int('--seed', 0), 0)
    .addOption(
      new Option(
        '--readout <kind>',
        'features the head reads: mean of all patches, or the cell means of a G×G split of the patch grid (gridG; grid8 on an 8×8 grid: every patch)',
      )
        .choices(READOUT_CHOICES)
        .default('mean'),
    )
    .option('--validation', 'score on the validation split of --data (for recipe decisions) instead of the test split')
    .option(
      '--attentive',
      'fit the attentive head over the patch tokens instead (learning rate and weight decay chosen on the training images; --readout and --l2 unused)',
    )
    .addOption(attentiveEpochsOption())
    .addOption(attentiveHeadsOption())
    .addOption(threadsOption('feature extraction'))
    .addOption(deviceOption('the encoder'))
    .action(async (opts) => {
      const { runProbe } = await import('../eval/probe.ts');
      const r = await runProbe({
        model: opts.model,
        data: opts.data,
        test: opts.test,
        l2: opts.l2,
        limit: opts.limit,
        testLimit: opts.testLimit,
        seed: opts.seed,
        progress: process.stderr.isTTY,
        readout: opts.readout,
        validation: opts.validation,
        attentive: opts.attentive ? { epochs: opts.attentiveEpochs, heads: opts.attentiveHeads } : undefined,
        threads: threadsOf(opts.threads),
        device: opts.device,
      });
      const fit =
        r.kind === 'attentive'
          ? `${r.heads} heads, lr ${r.lr}, weight decay ${r.weightDecay}, ${r.epochs} epochs`
          : `L2 ${r.l2}, L-BFGS ${r.iterations} iterations${r.converged ? '' : ' (not converged)'}`;
      console.log(
        `${r.kind} probe on ${r.testSplit}: ${r.testCount}${r.testSubsampled ? ` (seeded subsample of ${r.testTotal})` : ''} test images, ${r.trainCount} train images, ${fit}`,
      );
      console.log(`top-1 accuracy ${(100 * r.accuracy).toFixed(2)}%   macro-F1 ${(100 * r.macroF1).toFixed(2)}%\n`);
      console.log('| class | precision | recall | F1 | support |\n| --- | --- | --- | --- | --- |');
      for (const c of r.perClass)
        console.log(
          `| ${c.name} | ${(100 * c.precision).toFixed(1)} | ${(100 * c.recall).toFixed(1)} | ${(100 * c.f1).toFixed(1)} | ${c.support} |`,
        );
    });

  /** A number the predicate accepts, else a CLI error that says which values are allowed. */
  const numberWhere = (name: string, ok: (n: number) => boolean, allowed: string) => (v: string) => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n) || !ok(n))
      throw new InvalidArgumentError(`${name} must be ${allowed}, got '${v}'`);
    return n;
  };
  program
    .command('finetune')
    .description(
      "fine-tune a package's whole encoder with a linear head on labeled images (layer-wise LR decay, label smoothing, flips and translations); scores the test split and writes a package that /v1/classify serves",
    )
    .requiredOption('--model <dir>', 'model package to start from (its architecture, preprocessing and encoder)')
    .requiredOption('--data <path>', 'labeled training data (image class folders, STL-10, IDX)')
    .requiredOption('--out <dir>', 'package directory to write (finetune.ckpt and finetune.json go beside it)')
    .option('--random-init', "start from the same architecture drawn from --seed instead of the package's weights")
    .option('--limit <n>', 'train on at most n labeled images (seeded subsample)', int('--limit'))
    .option('--validation', 'score on the validation split of --data even where a test split exists')
    .option(
      '--test <path>',
      "labeled test data (default: the source's test split, else the validation split of --data)",
    )
    .option(
      '--test-limit <n>',
      'score on at most n test images (seeded subsample; default: the whole split)',
      int('--test-limit'),
    )
    .option('--epochs <n>', 'epochs of training', positive('--epochs'), 50)
    .option(
      '--time-budget <min>',
      'stop after this many minutes of training, the cosine schedule fitted to it',
      positive('--time-budget'),
    )
    .option('--batch <n>', 'images per step', int('--batch'), 64)
    .option('--lr <x>', 'peak learning rate (AdamW, after a linear warmup, cosine to zero)', positive('--lr'), 1e-3)
    .option(
      '--weight-decay <x>',
      'decoupled weight decay (not on biases and norms)',
      numberWhere('--weight-decay', (n) => n >= 0, 'a number ≥ 0'),
      0.05,
    )
    .option(
      '--layer-decay <x>',
      'layer-wise LR decay: a parameter l layers below the head takes lr × x^l (1 = off)',
      numberWhere('--layer-decay', (n) => n > 0 && n <= 1, 'in (0, 1]'),
      0.75,
    )
    .option(
      '--warmup-epochs <n>',
      'epochs of linear warmup (clipped to the run)',
      numberWhere('--warmup-epochs', (n) => n >= 0, 'a number ≥ 0'),
      5,
    )
    .option(
      '--label-smoothing <x>',
      'weight spread evenly over the classes in the targets',
      numberWhere('--label-smoothing', (n) => n >= 0 && n < 1, 'in [0, 1)'),
      0.1,
    )
    .option('--no-augment', 'no random flips and translations')
    .option('--seed <n>', 'seed for the subsamples, the order, the augmentation and the head', int('--seed', 0), 0)
    .addOption(threadsOption('the training and scoring graphs'))
    .option('--resume', 'continue the run checkpointed in --out')
    .option('--plain', 'log lines instead of one line rewritten in place (default when stderr is not a TTY)')
    .action(async (opts) => {
      const { runFinetune } = await import('../finetune/finetune.ts');
      const r = await runFinetune({
        model: opts.model,
        data: opts.data,
        out: opts.out,
        randomInit: opts.randomInit ?? false,
        limit: opts.limit,
        validation: opts.validation,
        test: opts.test,
        testLimit: opts.testLimit,
        epochs: opts.epochs,
        timeBudgetMin: opts.timeBudget,
        batch: opts.batch,
        lr: opts.lr,
        weightDecay: opts.weightDecay,
        layerDecay: opts.layerDecay,
        warmupEpochs: opts.warmupEpochs,
        labelSmoothing: opts.labelSmoothing,
        augment: opts.augment,
        seed: opts.seed,
        threads: threadsOf(opts.threads),
        resume: opts.resume ?? false,
        plain: opts.plain ?? !process.stderr.isTTY,
      });
      console.log(
        `fine-tuned ${r.steps} steps (${r.epochs.toFixed(2)} epochs, ${r.imagesSeen} images, ${r.seconds.toFixed(0)} s, ${r.imagesPerSec.toFixed(1)} img/s) on ${r.trainCount} labeled images; scored on ${r.testCount} images of ${r.testSplit}`,
      );
      console.log(`top-1 accuracy ${(100 * r.accuracy).toFixed(2)}%   macro-F1 ${(100 * r.macroF1).toFixed(2)}%`);
    });

  program
    .command('serve')
    .description('serve a model package over HTTP: embeddings, classification (see README for the API)')
    .requiredOption('--model <dir>', 'model package directory')
    .option('--port <n>', 'port', int('--port', 0), 8080)
    .option('--host <addr>', 'address to bind', '127.0.0.1')
    .option('--max-batch <n>', 'images per encoder run (default: 32 on the CPU, 256 on a GPU)', int('--max-batch'))
    .option(
      '--max-wait <ms>',
      'longest an image waits for its batch to fill (default: 5, 10 on a GPU)',
      int('--max-wait', 0),
    )
    .option('--max-queue <n>', 'queued images before answering 429', int('--max-queue'), 512)
    .option('--max-bytes <n>', 'largest accepted image, bytes', int('--max-bytes'), 10 * 1024 * 1024)
    .option(
      '--max-pixels <n>',
      'largest accepted image, width × height; also the pixels decoded at once',
      int('--max-pixels'),
      40_000_000,
    )
    .option(
      '--max-request-bytes <n>',
      'largest JSON or multipart body after decompression (at most 268435456)',
      maxRequestBytes,
      64 * 1024 * 1024,
    )
    .option(
      '--threads <n>',
      "onnxruntime intra-op threads per model; not all cores, as the offline commands use: the server's cores also decode images and answer requests, and its throughput comes from batching across requests",
      int('--threads'),
      1,
    )
    .addOption(deviceOption('the encoder'))
    .option(
      '--max-request-pixels <n>',
      "decoding work the images of one request may add up to, in a PNG pixel's worth (WebP counts 3 per pixel, AVIF/HEIF 8, plus each image's rows and setup; docs/api.md)",
      int('--max-request-pixels'),
      256_000_000,
    )
    .option(
      '--max-inflight-bytes <n>',
      'request-body bytes being received at once, all requests together (beyond: 429); peak memory is ~3-4× this',
      int('--max-inflight-bytes', 1024 * 1024),
      128 * 1024 * 1024,
    )
    .option(
      '--max-search-candidates <n>',
      'gallery images a search scores exactly: its cost whatever the gallery size (more: better recall in a large gallery, more CPU per search)',
      int('--max-search-candidates'),
      256,
    )
    .option(
      '--drain-timeout <s>',
      'seconds in-flight requests get to finish after SIGTERM',
      positive('--drain-timeout'),
      8,
    )
    .option(
      '--gallery <dir|url>',
      'persistent patch gallery for /v1/gallery and /v1/search: a directory, or a PostgreSQL database (postgres://user@host:port/db, pgvector) that several servers may share',
    )
    .option('--api-key <key>', 'required on mutating gallery routes (default: $IJEPA_API_KEY)')
    .option(
      '--allow-unauthenticated-writes',
      'serve a writable gallery without an API key on a non-loopback address (anyone reaching it can add and delete)',
    )
    .option(
      '--reembed',
      'when the gallery was built with another encoder (say, a re-export under the same id), re-embed its stored images with this one at start instead of refusing to start',
    )
    .option(
      '--gallery-garbage <bytes>',
      "journal bytes of replaced and deleted gallery images kept (or the live images' bytes, if more) before the gallery compacts itself while serving",
      int('--gallery-garbage', 4096),
      64 * 1024 * 1024,
    )
    .action(async (opts) => {
      const { serve } = await import('../serve/main.ts');
      await serve({
        model: opts.model,
        port: opts.port,
        host: opts.host,
        maxBatch: opts.maxBatch,
        maxWaitMs: opts.maxWait,
        device: opts.device,
        maxQueue: opts.maxQueue,
        maxBytes: opts.maxBytes,
        maxPixels: opts.maxPixels,
        maxRequestBytes: opts.maxRequestBytes,
        threads: opts.threads,
        maxRequestPixels: opts.maxRequestPixels,
        maxInflightBytes: opts.maxInflightBytes,
        maxSearchCandidates: opts.maxSearchCandidates,
        drainTimeout: opts.drainTimeout,
        gallery: opts.gallery,
        reembed: opts.reembed,
        galleryGarbageBytes: opts.galleryGarbage,
        apiKey: opts.apiKey ?? process.env.IJEPA_API_KEY,
        allowUnauthenticatedWrites: opts.allowUnauthenticatedWrites,
      });
    });

  program
    .command('index')
    .description(
      'embed a folder of images and add every patch to a gallery (resumable: already-indexed images are skipped)',
    )
    .requiredOption('--model <dir>', 'model package directory')
    .requiredOption('--images <dir>', 'folder of images (ids are paths relative to it)')
    .requiredOption(
      '--gallery <dir|url>',
      'gallery directory (created if missing) or PostgreSQL URL (postgres://…); must match the model',
    )
    .option('--batch <n>', 'images per encoder run', int('--batch'), 32)
    .option(
      '--shard <i/n>',
      'index only share i of n (0-based) of the folder, by a hash of each image id, so n processes can index one folder into one PostgreSQL gallery at once',
      (v: string) => {
        try {
          return parseShard(v);
        } catch (e) {
          throw new InvalidArgumentError((e as Error).message);
        }
      },
    )
    .addOption(deviceOption('the encoder'))
    .addOption(threadsOption('the encoder'))
    .action(async (opts) => {
      const { indexImages } = await import('../serve/index-images.ts');
      const r = await indexImages({
        model: opts.model,
        images: opts.images,
        gallery: opts.gallery,
        batch: opts.batch,
        shard: opts.shard,
        device: opts.device,
        threads: threadsOf(opts.threads),
        progress: process.stderr.isTTY,
      });
      console.log(JSON.stringify(r));
    });

  program
    .command('eval')
    .description(
      'can probes tell the trained encoder from the same network at random init and from raw pixels? linear, kNN and attentive probes on frozen features; writes eval.md/eval.json',
    )
    .requiredOption('--model <dir>', 'model package (from `ijepa export`)')
    .requiredOption('--data <path>', 'labeled training data (image class folders, STL-10, IDX)')
    .option(
      '--test <path>',
      "labeled test data (default: the source's test split, else the validation split of --data, which --holdout pre-training never sees)",
    )
    .option('--limit <n>', 'fit the probes on at most n training images (seeded subsample)', int('--limit'))
    .option(
      '--test-limit <n>',
      'score on at most n test (or validation) images (seeded subsample; default: the whole split)',
      int('--test-limit'),
    )
    .option(
      '--seed <n>',
      'seed for splits, subsamples, the random-init baseline and the attentive probe',
      int('--seed', 0),
      0,
    )
    .option(
      '--l2 <x|auto>',
      'L2 penalty of the linear probes, or auto: chosen per probe on a seeded 20% of its training images',
      l2Option,
      'auto',
    )
    .option('--k <n>', 'neighbours for kNN', int('--k'), 20)
    .option('--temperature <t>', 'kNN temperature', positive('--temperature'), 0.07)
    .option('--out <dir>', 'where eval.md and eval.json go (default: the package directory)')
    .addOption(
      new Option(
        '--readout <kinds...>',
        'linear-probe readouts of the frozen encoders: mean (the headline) and grid readouts, reported apart (dense and high-dimensional, they score high even at random init)',
      )
        .choices(READOUT_CHOICES)
        .default(['mean']),
    )
    .option(
      '--validation',
      'score on the validation split of --data even where a test split exists; the test split is not read',
    )
    .option('--no-baselines', 'skip the random-init and raw-pixel rows')
    .option('--no-knn', 'skip the kNN rows')
    .option('--no-attentive', 'skip the attentive probe (the slowest part)')
    .addOption(attentiveEpochsOption())
    .addOption(attentiveHeadsOption())
    .addOption(threadsOption('feature extraction and the probes'))
    .addOption(deviceOption('feature extraction'))
    .action(async (opts) => {
      const { runEval } = await import('../eval/eval.ts');
      const r = await runEval({
        model: opts.model,
        data: opts.data,
        test: opts.test,
        limit: opts.limit,
        testLimit: opts.testLimit,
        progress: process.stderr.isTTY,
        seed: opts.seed,
        l2: opts.l2,
        k: opts.k,
        temperature: opts.temperature,
        out: opts.out,
        readouts: opts.readout,
        validation: opts.validation,
        noBaselines: !opts.baselines,
        noKnn: !opts.knn,
        noAttentive: !opts.attentive,
        attentiveEpochs: opts.attentiveEpochs,
        attentiveHeads: opts.attentiveHeads,
        threads: threadsOf(opts.threads),
        device: opts.device,
      });
      console.log(r.markdown);
    });

  program
    .command('compare')
    .description(
      'the head-to-head on one backbone: random-init and MAE full fine-tuning against the I-JEPA encoder frozen under a linear and an attentive probe, on one seeded labeled subset; writes compare.md/compare.json',
    )
    .requiredOption(
      '--ijepa <dir>',
      'the JEPA package whose frozen encoder is probed (its architecture is also the random-init row)',
    )
    .requiredOption('--mae <dir>', 'the MAE package that is fine-tuned (`ijepa train --recipe mae`, then export)')
    .requiredOption('--data <path>', 'labeled training data (image class folders, STL-10, IDX)')
    .option('--also <dirs...>', 'more packages probed frozen beside the I-JEPA one (same architecture)')
    .option('--labeled <n>', 'labeled training images every row learns from (seeded subset)', int('--labeled'), 5000)
    .option(
      '--test <path>',
      "labeled test data (default: the source's test split, else the validation split of --data)",
    )
    .option('--validation', 'score on the validation split of --data even where a test split exists')
    .option(
      '--test-limit <n>',
      'score on at most n test (or validation) images (seeded subsample)',
      int('--test-limit'),
    )
    .option('--finetune-budget <min>', 'minutes of fine-tuning per fine-tuned row', positive('--finetune-budget'))
    .option(
      '--finetune-epochs <n>',
      'epochs of fine-tuning per fine-tuned row (instead of a time budget)',
      positive('--finetune-epochs'),
    )
    .option('--seed <n>', 'seed of the labeled subset, the fine-tunes and the probes', int('--seed', 0), 0)
    .addOption(attentiveEpochsOption())
    .addOption(threadsOption('fine-tuning, feature extraction and the probes'))
    .option('--out <dir>', 'where compare.md, compare.json and the fine-tuned packages go', 'compare')
    .option('--plain', 'log lines instead of a progress line')
    .action(async (opts) => {
      if (!opts.finetuneBudget === !opts.finetuneEpochs)
        throw new InvalidArgumentError('give one fine-tuning budget: --finetune-budget <min> or --finetune-epochs <n>');
      const { runCompare } = await import('../compare/compare.ts');
      const r = await runCompare({
        ijepa: opts.ijepa,
        mae: opts.mae,
        also: opts.also,
        data: opts.data,
        test: opts.test,
        validation: opts.validation,
        testLimit: opts.testLimit,
        labeled: opts.labeled,
        finetuneMinutes: opts.finetuneBudget,
        finetuneEpochs: opts.finetuneEpochs,
        seed: opts.seed,
        attentiveEpochs: opts.attentiveEpochs,
        threads: threadsOf(opts.threads),
        out: opts.out,
        plain: opts.plain ?? !process.stderr.isTTY,
      });
      console.log(r.markdown);
    });

  program
    .command('score')
    .description(
      "score features computed elsewhere with eval's headline probes (standardised; linear probe and cosine kNN); prints JSON",
    )
    .requiredOption('--train <prefix>', 'probe-training features: <prefix>.json, <prefix>.x.f32, <prefix>.y.i32')
    .requiredOption('--val <prefix>', 'scored features, in the same format')
    .option(
      '--l2 <x|auto>',
      'L2 penalty of the linear probe, or auto: chosen on a seeded 20% of the training features',
      l2Option,
      'auto',
    )
    .option('--k <n>', 'neighbours for kNN', int('--k'), 20)
    .option('--temperature <t>', 'kNN temperature', positive('--temperature'), 0.07)
    .addOption(threadsOption('the kNN similarities'))
    .action(async (opts) => {
      const { readFeatureFile } = await import('../eval/features.ts');
      const { scoreFeatures } = await import('../eval/score.ts');
      const train = readFeatureFile(opts.train);
      const val = readFeatureFile(opts.val);
      if (train.dim !== val.dim || train.classes !== val.classes)
        throw new Error(
          `--train has ${train.dim} values and ${train.classes} classes per image, --val ${val.dim} and ${val.classes}`,
        );
      const scores = await scoreFeatures(train, val, train.dim, train.classes, {
        l2: opts.l2,
        k: opts.k,
        temperature: opts.temperature,
        threads: threadsOf(opts.threads),
      });
      console.log(JSON.stringify({ train: train.n, val: val.n, dim: train.dim, classes: train.classes, ...scores }));
    });

  program
    .command('figures')
    .description('PNG figures of a run: masks, training curves, UMAP feature map, nearest-patch reconstruction')
    .requiredOption('--run <dir>', 'run directory written by `ijepa train`')
    .requiredOption(
      '--data <path>',
      'labeled data (held-out images come from its test split, or its validation split for --holdout runs)',
    )
    .option('--out <dir>', 'where the PNGs go (default: <run>/figures)')
    .option('--count <n>', 'images in the mask and reconstruction figures', int('--count'), 8)
    .option('--map-points <n>', 'held-out images in the feature map', int('--map-points'), 2000)
    .option('--gallery <n>', 'gallery images for the nearest-patch reconstruction', int('--gallery'), 1000)
    .option('--seed <n>', 'seed for the picked images and masks', int('--seed', 0), 0)
    .addOption(threadsOption('the encoder and predictor'))
    .addOption(deviceOption('the encoder and predictor'))
    .action(async (opts) => {
      const { makeFigures } = await import('../eval/figures.ts');
      const files = await makeFigures({
        run: opts.run,
        data: opts.data,
        out: opts.out,
        count: opts.count,
        mapPoints: opts.mapPoints,
        gallery: opts.gallery,
        seed: opts.seed,
        threads: threadsOf(opts.threads),
        device: opts.device,
      });
      console.log(files.join('\n'));
    });

  program
    .command('study')
    .description(
      'recipe study: pre-train each recipe at each time budget (validation split held out), score frozen probes on validation; writes study.md/study.png',
    )
    .requiredOption('--data <path>', 'labeled training data (IDX or image class folders)')
    .requiredOption('--out <dir>', 'study directory (results.jsonl; may be shared by parallel study processes)')
    .addOption(new Option('--preset <name>', 'model preset').choices(presetNames).default('vit-tiny'))
    .option('--recipes <names>', 'comma-separated study variants (study/variants/)', 'reference')
    .option('--budgets <minutes>', 'comma-separated time budgets in minutes', '15')
    .option('--seeds <list>', 'comma-separated seeds', '0')
    .addOption(threadsOption('each run (training and probes)'))
    .option('--limit <n>', 'labeled training images for the probes (seeded subsample)', int('--limit'))
    .option('--config <file>', 'JSON overrides applied after each recipe (e.g. model, batch)')
    .option('--readouts <names>', `comma-separated probe readouts (${READOUTS.join(', ')})`, 'mean,grid2')
    .option('--layers <list>', 'comma-separated encoder depths the probes read (first k blocks; default: all blocks)')
    .option(
      '--l2 <x|auto>',
      'L2 penalty of the probes, or auto: chosen per probe on a seeded 20% of its training images (one setting per study directory)',
      l2Option,
      'auto',
    )
    .option('--report', 'only rebuild study.md / study.png from results.jsonl')
    .action(async (opts) => {
      const { runStudy, writeReport } = await import('../study/study.ts');
      const { variantNames } = await import('../study/variants.ts');
      const { readConfigFile } = await import('../train/config.ts');
      const list = (v: string, what: string, parse: (x: string) => number) =>
        v.split(',').map((x) => {
          const n = parse(x.trim());
          if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`${what}: '${x}' is not a valid number`);
          return n;
        });
      if (opts.report) {
        console.log(await writeReport(opts.out));
        return;
      }
      const recipes = (opts.recipes as string).split(',').map((r) => r.trim());
      for (const r of recipes)
        if (!variantNames.includes(r))
          throw new InvalidArgumentError(`--recipes: unknown recipe '${r}' (known: ${variantNames.join(', ')})`);
      const readouts = (opts.readouts as string).split(',').map((r) => r.trim());
      for (const r of readouts)
        if (!READOUT_CHOICES.includes(r as never))
          throw new InvalidArgumentError(`--readouts: unknown readout '${r}' (known: ${READOUT_CHOICES.join(', ')})`);
      console.log(
        await runStudy({
          data: opts.data,
          out: opts.out,
          preset: opts.preset,
          recipes,
          threads: threadsOf(opts.threads),
          limit: opts.limit,
          readouts: readouts as never,
          layers: opts.layers ? list(opts.layers, '--layers', (x) => (/^\d+$/.test(x) ? Number(x) : NaN)) : undefined,
          config: opts.config ? readConfigFile(opts.config) : undefined,
          l2: opts.l2,
          budgets: list(opts.budgets, '--budgets', Number),
          seeds: list(opts.seeds, '--seeds', (x) => (/^\d+$/.test(x) ? Number(x) : NaN)),
        }),
      );
    });

  program
    .command('devices')
    .description(
      'what this machine can run graphs on: the CPU, and a WebGPU adapter with its limits, or why there is none',
    )
    .option('--json', 'print the report as JSON')
    .action(async (opts) => {
      const { probeDevices } = await import('../runtime/devices.ts');
      const report = probeDevices();
      if (opts.json) console.log(JSON.stringify(report, null, 2));
      else
        for (const r of report)
          console.log(
            `${r.device}: ${r.available ? 'available' : 'not available'}\n${r.detail.map((l) => `  ${l}`).join('\n')}`,
          );
    });

  program
    .command('info')
    .description("print a preset's architecture and parameter counts")
    .addOption(new Option('--preset <name>', 'model preset').choices(presetNames).default('vit-tiny'))
    .action(async (opts) => {
      const { presets, gridOf } = await import('../model/presets.ts');
      const { encoderSpecs, predictorSpecs, countParams } = await import('../model/vit.ts');
      const m = presets[opts.preset as PresetName];
      const g = gridOf(m);
      console.log(
        JSON.stringify(
          {
            preset: opts.preset,
            ...m,
            grid: `${g.rows}x${g.cols}`,
            encoderParams: countParams(encoderSpecs(m)),
            predictorParams: countParams(predictorSpecs(m)),
          },
          null,
          2,
        ),
      );
    });

  return program;
}

export async function main(argv: string[]): Promise<void> {
  try {
    await buildCli().parseAsync(argv);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    // The serving image ships serve/ and what it loads, not the trainer.
    const missing =
      err.code === 'ERR_MODULE_NOT_FOUND' && /\/(train|eval|study|onnx|finetune|compare)\//.test(err.message);
    const message = missing
      ? `this install holds the server only; this command needs the whole repository (${err.message})`
      : err.message;
    console.error(process.env.IJEPA_DEBUG ? err.stack : `ijepa: ${message}`);
    process.exitCode = 1;
  }
}
