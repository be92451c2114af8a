/**
 * Coalesces concurrent requests into batches for one encoder run: a batch runs when it is full or
 * when its oldest image has waited maxWaitMs. One run at a time; beyond maxQueue waiting images,
 * new work is refused as overloaded (429) instead of growing latency without bound.
 */
import { ApiError } from './errors.ts';
import type { Embeddings } from '../runtime/embedder.ts';

const cancelled = () => new ApiError('client_closed', 'the client closed the request');

export interface BatcherOptions {
  maxBatch: number;
  maxWaitMs: number;
  maxQueue: number;
}

export interface Embedded {
  pooled: Float32Array;
  tokens: Float32Array;
}

interface Job {
  rgb: Uint8Array;
  resolve(e: Embedded): void;
  reject(e: Error): void;
}

export interface BatcherMetrics {
  batch(size: number, seconds: number): void;
  queue(size: number): void;
}

export class Batcher {
  private readonly queue: Job[] = [];
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;

  constructor(
    private readonly run: (images: Uint8Array[]) => Promise<Embeddings>,
    private readonly dim: number,
    private readonly tokensPerImage: number,
    private readonly o: BatcherOptions,
    private readonly metrics?: BatcherMetrics,
  ) {}

  get pending(): number {
    return this.queue.length;
  }

  /** Embeds one image with others; `signal` (the client went away) takes it out of the queue if it has not run. */
  submit(rgb: Uint8Array, signal?: AbortSignal): Promise<Embedded> {
    if (signal?.aborted) return Promise.reject(cancelled());
    if (this.queue.length >= this.o.maxQueue) {
      return Promise.reject(new ApiError('overloaded', `server busy: ${this.queue.length} images queued`, 1));
    }
    return new Promise((resolve, reject) => {
      const job = { rgb, resolve, reject };
      this.queue.push(job);
      this.metrics?.queue(this.queue.length);
      signal?.addEventListener('abort', () => {
        const i = this.queue.indexOf(job);
        if (i < 0) return;
        this.queue.splice(i, 1);
        this.metrics?.queue(this.queue.length);
        reject(cancelled());
      });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.running) return;
    if (this.queue.length >= this.o.maxBatch) {
      this.flush();
    } else if (!this.timer) {
      this.timer = setTimeout(() => this.flush(), this.o.maxWaitMs);
    }
  }

  private flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.running || this.queue.length === 0) return;
    const jobs = this.queue.splice(0, this.o.maxBatch);
    this.metrics?.queue(this.queue.length);
    const start = performance.now();
    this.running = this.run(jobs.map((j) => j.rgb))
      .then((e) => {
        this.metrics?.batch(jobs.length, (performance.now() - start) / 1000);
        const d = this.dim;
        const t = this.tokensPerImage * d;
        jobs.forEach((j, i) =>
          j.resolve({ pooled: e.pooled.slice(i * d, (i + 1) * d), tokens: e.tokens.slice(i * t, (i + 1) * t) }),
        );
      })
      .catch((err: Error) =>
        jobs.forEach((j) => j.reject(new ApiError('internal', `inference failed: ${err.message}`))),
      )
      .finally(() => {
        this.running = null;
        if (this.queue.length) this.schedule();
      });
  }

  /** Resolves once everything queued so far has run. */
  async drain(): Promise<void> {
    while (this.running || this.queue.length) {
      if (!this.running) this.flush();
      await this.running;
    }
  }
}
