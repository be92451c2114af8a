import { RuntimeError } from './errors.ts';

/**
 * A weighted semaphore, fair by owner. Decoding holds the full-resolution RGB of an image in memory
 * (a 36-megapixel PNG is ~108 MB before it is resized), so the server bounds the work being
 * decoded at once: without it, one small request of many such images holds gigabytes (docs/api.md,
 * "Limits and batching"). The server's gallery queries pass one too, each of weight 1. The work
 * waiting is bounded too (`maxWaiting`, beyond which `run` fails as busy), and a waiter whose
 * signal aborts leaves the queue without running.
 *
 * `slots` bounds the tasks running at once whatever their weight: decodes beyond the cores only
 * queue in libuv's pool, in order, where a departed client's can no longer be dropped. Waiters are
 * served by owner (a request) in turn, one task per turn, and in order within an owner, so that one
 * request's 64 images cannot make another's single image wait behind all of them; a turn is kept
 * until its task fits, so a heavy task is never starved by light ones. An owner with nothing
 * waiting is never refused as busy: other requests' work cannot lock it out.
 */
export class Gate {
  private used = 0;
  private running = 0;
  private waitingWeight = 0;
  /** Waiting tasks by owner, the owners in turn order. */
  private readonly queues = new Map<unknown, { weight: number; go: () => void }[]>();

  constructor(
    readonly capacity: number,
    readonly maxWaiting = Number.POSITIVE_INFINITY,
    /** The refusal's message, given the weight waiting. */
    private readonly busy = (waiting: number) => `decoding is busy: ${waiting} pixels are waiting`,
    readonly slots = Number.POSITIVE_INFINITY,
  ) {}

  /** Runs `task` once `weight` (clamped to the capacity) fits and `owner`'s turn has come. */
  async run<T>(weight: number, task: () => Promise<T>, signal?: AbortSignal, owner?: object): Promise<T> {
    if (signal?.aborted) throw cancelled();
    const w = Math.min(Math.max(weight, 0), this.capacity);
    if (this.queues.size > 0 || !this.fits(w)) {
      const newcomer = owner !== undefined && !this.queues.has(owner);
      if (!newcomer && this.waitingWeight + w > this.maxWaiting) {
        throw new RuntimeError('busy', this.busy(this.waitingWeight));
      }
      await new Promise<void>((go, reject) => {
        const queue = this.queues.get(owner) ?? [];
        const onAbort = () => {
          const i = queue.indexOf(entry);
          if (i < 0) return;
          queue.splice(i, 1);
          if (queue.length === 0) this.queues.delete(owner);
          this.waitingWeight -= w;
          reject(cancelled());
          this.admit();
        };
        const entry = {
          weight: w,
          go: () => {
            signal?.removeEventListener('abort', onAbort);
            go();
          },
        };
        queue.push(entry);
        this.queues.set(owner, queue);
        this.waitingWeight += w;
        signal?.addEventListener('abort', onAbort);
      });
    } else {
      this.used += w;
      this.running++;
    }
    try {
      return await task();
    } finally {
      this.used -= w;
      this.running--;
      this.admit();
    }
  }

  get inUse(): number {
    return this.used;
  }

  get waitingPixels(): number {
    return this.waitingWeight;
  }

  private fits(w: number): boolean {
    return this.running < this.slots && this.used + w <= this.capacity;
  }

  private admit(): void {
    for (let turn = this.queues.entries().next(); !turn.done; turn = this.queues.entries().next()) {
      const [owner, queue] = turn.value;
      if (!this.fits(queue[0].weight)) return;
      const next = queue.shift()!;
      // To the back of the turn order, or out of it.
      this.queues.delete(owner);
      if (queue.length > 0) this.queues.set(owner, queue);
      this.waitingWeight -= next.weight;
      this.used += next.weight;
      this.running++;
      next.go();
    }
  }
}

const cancelled = () => new RuntimeError('cancelled', 'the client closed the request');
