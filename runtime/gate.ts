import { RuntimeError } from './errors.ts';

/**
 * A weighted first-come semaphore. Decoding holds the full-resolution RGB of an image in memory
 * (a 36-megapixel PNG is ~108 MB before it is resized), so the server bounds the pixels being
 * decoded at once: without it, one small request of many such images holds gigabytes (docs/api.md,
 * "Limits and batching"). The work waiting is
 * bounded too (`maxWaiting`, beyond which `run` fails as busy), and a waiter whose signal aborts
 * leaves the queue without running.
 */
export class Gate {
  private used = 0;
  private waitingWeight = 0;
  private readonly waiting: { weight: number; go: () => void }[] = [];

  constructor(
    readonly capacity: number,
    readonly maxWaiting = Number.POSITIVE_INFINITY,
  ) {}

  /** Runs `task` once `weight` (clamped to the capacity) fits; waiters are served in order. */
  async run<T>(weight: number, task: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const w = Math.min(Math.max(weight, 0), this.capacity);
    if (this.waiting.length > 0 || this.used + w > this.capacity) {
      if (this.waitingWeight + w > this.maxWaiting) {
        throw new RuntimeError('busy', `decoding is busy: ${this.waitingWeight} pixels are waiting`);
      }
      await new Promise<void>((go, reject) => {
        const entry = { weight: w, go };
        this.waiting.push(entry);
        this.waitingWeight += w;
        signal?.addEventListener('abort', () => {
          const i = this.waiting.indexOf(entry);
          if (i < 0) return;
          this.waiting.splice(i, 1);
          this.waitingWeight -= w;
          reject(new RuntimeError('cancelled', 'the client closed the request'));
          this.admit();
        });
      });
    } else {
      this.used += w;
    }
    try {
      return await task();
    } finally {
      this.used -= w;
      this.admit();
    }
  }

  get inUse(): number {
    return this.used;
  }

  get waitingPixels(): number {
    return this.waitingWeight;
  }

  private admit(): void {
    while (this.waiting.length > 0 && this.used + this.waiting[0].weight <= this.capacity) {
      const next = this.waiting.shift()!;
      this.waitingWeight -= next.weight;
      this.used += next.weight;
      next.go();
    }
  }
}
