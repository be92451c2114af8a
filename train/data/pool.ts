/**
 * Items made off the calling thread. The process keeps one set of loader threads (worker.ts),
 * started when a loader first asks and shared by every loader after it: a thread takes about a
 * second to start (tsx, sharp), which a run pays once, not every time it opens a loader. Each
 * loader is a session on its threads, an ItemMaker per thread with its share of the decode cache.
 * An index always goes to the same thread (index mod count), so that cache holds a fixed part of
 * the dataset and the calling thread knows which images need no bytes sent. Which thread makes
 * an item changes no float of it (item.ts).
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { ImageSource } from '../../format/preprocess.ts';
import { ItemMaker, type ItemOptions, type ItemResult } from './item.ts';

export type ToWorker =
  | { type: 'open'; session: number; options: ItemOptions }
  | { type: 'close'; session: number }
  | {
      type: 'item';
      session: number;
      id: number;
      epoch: number;
      index: number;
      /** Absent when the thread holds the decoded image. */
      src?: ImageSource;
    };

export type Reply = ({ id: number; ok: true } & ItemResult) | { id: number; ok: false; message: string };

/** A thread died or the loader was closed: the batch fails, unlike an unreadable image. */
export class PoolFailure extends Error {}

/** One core is left to the step: sharp's own threads add to the workers'. */
export function defaultWorkers(): number {
  return Math.max(1, availableParallelism() - 1);
}

interface Waiting {
  session: number;
  worker: number;
  resolve: (r: ItemResult) => void;
  reject: (e: Error) => void;
}

class Threads {
  private readonly workers: Worker[] = [];
  /** Items under way per thread: a thread with none does not keep the process alive. */
  private readonly busy: number[] = [];
  private readonly waiting = new Map<number, Waiting>();
  private nextId = 0;
  failure: PoolFailure | null = null;

  grow(count: number): void {
    // A thread does not inherit the module hooks that run TypeScript, so it registers tsx first.
    const code = `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((t) => { t.register(); return import(${JSON.stringify(new URL('./worker.ts', import.meta.url).href)}); });`;
    while (this.workers.length < count) {
      const w = this.workers.length;
      const worker = new Worker(code, { eval: true });
      worker.unref();
      worker.on('message', (m: Reply) => this.settle(m));
      worker.on('error', (e: Error) => this.fail(`loader thread ${w} failed: ${e.message}`));
      worker.on('exit', (code) => this.fail(`loader thread ${w} exited (${code})`));
      this.workers.push(worker);
      this.busy.push(0);
    }
  }

  post(worker: number, m: ToWorker): void {
    this.workers[worker].postMessage(m);
  }

  item(worker: number, m: Omit<Extract<ToWorker, { type: 'item' }>, 'id'>): Promise<ItemResult> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    const result = new Promise<ItemResult>((resolve, reject) =>
      this.waiting.set(id, { session: m.session, worker, resolve, reject }),
    );
    if (this.busy[worker]++ === 0) this.workers[worker].ref();
    this.workers[worker].postMessage({ ...m, id }, m.src ? [m.src.data.buffer as ArrayBuffer] : []);
    return result;
  }

  private settle(m: Reply): void {
    const w = this.waiting.get(m.id);
    if (!w) return;
    this.waiting.delete(m.id);
    this.idle(w.worker);
    if (m.ok) w.resolve({ data: m.data, flipped: m.flipped, decoded: m.decoded, cached: m.cached });
    else w.reject(new Error(m.message));
  }

  private idle(worker: number): void {
    if (--this.busy[worker] === 0) this.workers[worker].unref();
  }

  /** Fails what `session` has under way (its loader was closed). */
  drop(session: number): void {
    for (const [id, w] of this.waiting)
      if (w.session === session) {
        this.waiting.delete(id);
        this.idle(w.worker);
        w.reject(new PoolFailure('the loader was closed'));
      }
  }

  private fail(why: string): void {
    if (this.failure) return;
    this.failure = new PoolFailure(why);
    if (threads === this) threads = null; // later loaders start new threads
    for (const w of this.waiting.values()) w.reject(this.failure);
    this.waiting.clear();
    for (const w of this.workers) void w.terminate();
  }
}

let threads: Threads | null = null;
let nextSession = 0;

/** A loader's sessions are closed on its threads when it is collected without close(). */
const unclosed = new FinalizationRegistry<{ on: Threads; session: number; count: number }>((s) => {
  if (!s.on.failure) for (let w = 0; w < s.count; w++) s.on.post(w, { type: 'close', session: s.session });
});

export class ItemPool {
  private readonly inline: ItemMaker | null;
  private readonly on: Threads | null;
  private readonly session = nextSession++;
  /** Indexes whose decoded image their thread holds. */
  private readonly held = new Set<number>();
  private closed = false;

  /** `count` 0: items are made on the calling thread. */
  constructor(
    o: ItemOptions,
    private readonly count: number,
  ) {
    this.inline = count === 0 ? new ItemMaker(o) : null;
    if (count === 0) {
      this.on = null;
      return;
    }
    this.on = threads ??= new Threads();
    this.on.grow(count);
    const options = { ...o, cacheBytes: Math.floor(o.cacheBytes / count) };
    for (let w = 0; w < count; w++) this.on.post(w, { type: 'open', session: this.session, options });
    unclosed.register(this, { on: this.on, session: this.session, count }, this);
  }

  /** Item `index` of `epoch`; `read` gives its bytes when no cache holds it. */
  async make(epoch: number, index: number, read: () => Promise<ImageSource>): Promise<ItemResult> {
    if (this.closed) throw new PoolFailure('the loader was closed');
    if (this.inline) return this.inline.make(epoch, index, this.inline.has(index) ? undefined : await read());
    const on = this.on!;
    if (on.failure) throw on.failure;
    let src: ImageSource | undefined;
    if (!this.held.has(index)) {
      const s = await read();
      // Its own copy, to transfer: a dataset's bytes may be a view of a whole file (IDX).
      src = { ...s, data: new Uint8Array(s.data) };
    }
    const r = await on.item(index % this.count, { type: 'item', session: this.session, epoch, index, src });
    if (r.cached) this.held.add(index);
    return r;
  }

  /** Drops this loader's caches on its threads; items under way fail. The threads stay for other loaders. */
  close(): void {
    if (this.closed || !this.on) return;
    this.closed = true;
    unclosed.unregister(this);
    this.on.drop(this.session);
    if (!this.on.failure)
      for (let w = 0; w < this.count; w++) this.on.post(w, { type: 'close', session: this.session });
  }
}
