/**
 * Real server processes for tests that need them: `ijepa serve` in a child, the CPU time it has
 * spent (from /proc), and a victim client's latencies while something else loads the server.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const BIN = join(import.meta.dirname, '../../bin/ijepa.js');

export interface Running {
  child: ChildProcess;
  base: string;
  log(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** `ijepa serve --model <pkg>` in a child process; `fileSizeKb` runs it under `ulimit -f` (writes past it fail like a full disk). */
export async function startServer(pkg: string, args: string[], fileSizeKb?: number): Promise<Running> {
  const cmd = [process.execPath, BIN, 'serve', '--model', pkg, '--port', '0', ...args];
  const child = fileSizeKb
    ? spawn('bash', ['-c', `ulimit -f ${fileSizeKb}; exec "$@"`, 'bash', ...cmd], {
        stdio: ['ignore', 'ignore', 'pipe'],
      })
    : spawn(cmd[0], cmd.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  let buf = '';
  child.stderr!.on('data', (d) => (buf += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const base = await new Promise<string>((resolve, reject) => {
    const poll = setInterval(() => {
      const m = /"address":"([\d.]+:\d+)"/.exec(buf);
      if (m) {
        clearInterval(poll);
        resolve(`http://${m[1]}`);
      }
    }, 20);
    void exited.then(({ code }) => {
      clearInterval(poll);
      reject(new Error(`server exited (${code}): ${buf}`));
    });
  });
  return { child, base, log: () => buf, exited };
}

/** User + system CPU seconds a process has spent, all its threads together (Linux /proc). */
export function cpuSeconds(pid: number): number {
  // Fields after the command name (which may hold spaces, so split after its closing paren).
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15 of proc(5))
  return ticks / 100; // USER_HZ is 100 on Linux
}

/** Median and 99th percentile of a list of numbers. */
export function percentiles(xs: number[]): { p50: number; p99: number } {
  const s = [...xs].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))];
  return { p50: at(0.5), p99: at(0.99) };
}

/**
 * A victim client: sends `request()` one at a time until `until` resolves, and returns each
 * request's latency in milliseconds (failed requests are thrown, not timed).
 */
export async function victim(request: () => Promise<Response>, until: Promise<unknown>): Promise<number[]> {
  let done = false;
  void until.finally(() => (done = true));
  const ms: number[] = [];
  while (!done) {
    const t0 = performance.now();
    const r = await request();
    await r.arrayBuffer();
    if (!r.ok) throw new Error(`victim request failed: ${r.status}`);
    ms.push(performance.now() - t0);
  }
  return ms;
}

/** POST /v1/gallery of one PNG as a raw body, with its metadata in the query string. */
export const addPng = (base: string, id: string, png: Buffer, metadata?: object) =>
  fetch(`${base}/v1/gallery?id=${id}${metadata ? `&metadata=${encodeURIComponent(JSON.stringify(metadata))}` : ''}`, {
    method: 'POST',
    headers: { 'content-type': 'image/png' },
    body: new Uint8Array(png),
  });
