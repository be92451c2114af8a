/**
 * A weighted first-come semaphore. Decoding holds the full-resolution RGB of an image in memory
 * (a 36-megapixel PNG is ~108 MB before it is resized), so the server bounds the pixels being
 * decoded at once: without it a 5 MB request of 32 such images took 3.6 GB.
 */
export class Gate {
  private used = 0;
  private readonly waiting: { weight: number; go: () => void }[] = [];

  constructor(readonly capacity: number) {}

  /** Runs `task` once `weight` (clamped to the capacity) fits; waiters are served in order. */
  async run<T>(weight: number, task: () => Promise<T>): Promise<T> {
    const w = Math.min(Math.max(weight, 0), this.capacity);
    if (this.waiting.length > 0 || this.used + w > this.capacity) {
      await new Promise<void>((go) => this.waiting.push({ weight: w, go }));
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

  private admit(): void {
    while (this.waiting.length > 0 && this.used + this.waiting[0].weight <= this.capacity) {
      const next = this.waiting.shift()!;
      this.used += next.weight;
      next.go();
    }
  }
}
