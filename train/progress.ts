/**
 * How a run reports its steps: a metrics.jsonl line every `logEvery` steps and on every step with
 * diagnostics, shown as a plain log line or on a progress bar, with the images per second since
 * the last line.
 */
import { appendFileSync } from 'node:fs';
import cliProgress from 'cli-progress';
import type { Diagnostics } from './diagnostics.ts';

/** One line of metrics.jsonl. */
export interface StepRecord {
  step: number;
  loss: number;
  lr: number;
  wd: number;
  momentum: number;
  epoch: number;
  images: number;
  elapsed: number;
  /** With SIGReg: its term, and the prediction loss alone (what the zero-predictor diagnostic compares with). */
  sigreg?: number;
  predLoss?: number;
  imgPerSec?: number;
}

export interface ProgressOptions {
  metricsPath: string;
  /** Write every this many steps (steps with diagnostics always). */
  logEvery: number;
  /** Log lines instead of a progress bar. */
  plain: boolean;
  /** What the log calls the prediction term next to the total when SIGReg is on; null without SIGReg. */
  term: string | null;
  log: (line: string) => void;
}

export class Progress {
  private readonly bar: cliProgress.SingleBar | null;
  private windowStart = performance.now();
  private windowImages = 0;

  constructor(
    private readonly o: ProgressOptions,
    total: number,
    step: number,
  ) {
    this.bar = o.plain
      ? null
      : new cliProgress.SingleBar(
          {
            format:
              'train |{bar}| {value}/{total} steps | loss {loss} | lr {lr} | mom {mom} | {ips} img/s | ETA {eta_formatted}',
            hideCursor: true,
            etaBuffer: 20,
          },
          cliProgress.Presets.shades_classic,
        );
    this.bar?.start(total, step, { loss: '-', lr: '-', mom: '-', ips: '-' });
  }

  setTotal(total: number): void {
    this.bar?.setTotal(total);
  }

  /**
   * After an optimizer step of `images` images: writes and shows its record when it is due, with
   * the diagnostics when the step computed them. `total` is the run's step count, when known.
   */
  step(record: StepRecord, images: number, diag: Diagnostics | undefined, total: number | undefined): void {
    this.windowImages += images;
    const line: StepRecord & Partial<Diagnostics> = diag ? { ...record, ...diag } : record;
    if (record.step % this.o.logEvery !== 0 && !diag) {
      this.bar?.update(record.step);
      return;
    }
    const now = performance.now();
    line.imgPerSec = this.windowImages / ((now - this.windowStart) / 1000);
    this.windowStart = now;
    this.windowImages = 0;
    appendFileSync(this.o.metricsPath, `${JSON.stringify(line)}\n`);
    if (this.o.plain) this.o.log(plainLine(line, diag, this.o.term, total));
    this.bar?.update(record.step, {
      loss: record.loss.toFixed(4),
      lr: record.lr.toExponential(2),
      mom: record.momentum.toFixed(4),
      ips: line.imgPerSec.toFixed(1),
    });
  }

  stop(): void {
    this.bar?.stop();
  }
}

function plainLine(r: StepRecord, diag: Diagnostics | undefined, term: string | null, total: number | undefined) {
  const terms = term ? ` (${term} ${r.predLoss!.toFixed(4)})` : '';
  const diagnostics = diag
    ? ` | featStd ${diag.featStd.toFixed(4)} (healthy ${diag.featStdHealthy.toFixed(4)}) rankMe ${diag.rankMe.toFixed(1)} emaGap ${diag.emaGap.toExponential(2)} zeroLoss ${diag.zeroLoss.toFixed(4)}`
    : '';
  return `step ${r.step}/${total ?? '?'} loss ${r.loss.toFixed(4)}${terms} lr ${r.lr.toExponential(2)} mom ${r.momentum.toFixed(4)} ${r.imgPerSec!.toFixed(1)} img/s${diagnostics}`;
}
