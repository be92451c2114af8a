/**
 * A loader thread (pool.ts starts it): one ItemMaker, with its own decode cache, per loader that
 * uses the thread; makes the items it is sent and returns their floats.
 */
import { parentPort } from 'node:worker_threads';
import { ItemMaker } from './item.ts';
import type { Reply, ToWorker } from './pool.ts';

const makers = new Map<number, ItemMaker>();
const port = parentPort!;
port.on('message', (m: ToWorker) => {
  if (m.type === 'open') makers.set(m.session, new ItemMaker(m.options));
  else if (m.type === 'close') makers.delete(m.session);
  else {
    const maker = makers.get(m.session);
    const made = maker ? maker.make(m.epoch, m.index, m.src) : Promise.reject(new Error('the loader was closed'));
    made.then(
      (r) => port.postMessage({ id: m.id, ok: true, ...r } satisfies Reply, [r.data.buffer as ArrayBuffer]),
      (e: unknown) =>
        port.postMessage({ id: m.id, ok: false, message: e instanceof Error ? e.message : String(e) } satisfies Reply),
    );
  }
});
