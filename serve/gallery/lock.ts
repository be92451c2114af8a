/**
 * One writer per gallery: an exclusive lock file created on open (O_EXCL) and removed on close.
 * It records who holds it; a lock whose process is gone (kill -9, a crash) is stale and taken
 * over, so a crash never leaves a gallery unopenable.
 */
import { closeSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { GalleryError } from './errors.ts';

const LOCK = 'lock';

interface Holder {
  pid: number;
  /** The process's start time in clock ticks (/proc/<pid>/stat), so a reused pid is not mistaken for the holder. */
  start: string | null;
  host: string;
  command: string;
  since: string;
}

function startTime(pid: number): string | null {
  try {
    // Field 22 of /proc/<pid>/stat, counted after the parenthesised command name.
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')[19];
  } catch {
    return null;
  }
}

function alive(h: Holder): boolean {
  if (h.host !== hostname()) return true; // cannot tell: treat as held
  try {
    process.kill(h.pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  const now = startTime(h.pid);
  return h.start === null || now === null || now === h.start;
}

export class GalleryLock {
  private released = false;
  private constructor(private readonly path: string) {}

  static acquire(dir: string): GalleryLock {
    const path = join(dir, LOCK);
    const me: Holder = {
      pid: process.pid,
      start: startTime(process.pid),
      host: hostname(),
      command: process.argv.slice(1).join(' ').slice(0, 200),
      since: new Date().toISOString(),
    };
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fd = openSync(path, 'wx');
        writeSync(fd, JSON.stringify(me));
        closeSync(fd);
        const lock = new GalleryLock(path);
        process.once('exit', lock.onExit);
        return lock;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      let holder: Holder | null = null;
      try {
        holder = JSON.parse(readFileSync(path, 'utf8')) as Holder;
      } catch {
        // Unreadable or half-written by a process that died while writing it: stale.
      }
      if (holder && alive(holder)) {
        throw new GalleryError(
          'in_use',
          `gallery ${dir} is open for writing by process ${holder.pid} on ${holder.host} (${holder.command}, since ${holder.since}); stop it first`,
        );
      }
      rmSync(path, { force: true });
    }
    throw new GalleryError('in_use', `gallery ${dir}: could not take its lock (${path})`);
  }

  private readonly onExit = () => this.release();

  release(): void {
    if (this.released) return;
    this.released = true;
    process.off('exit', this.onExit);
    rmSync(this.path, { force: true });
  }
}
