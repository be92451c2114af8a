/**
 * A throwaway PostgreSQL cluster for tests: `initdb` in a temp directory, `postgres` on its own
 * free port on 127.0.0.1 (its unix socket in that directory too), trust authentication for the
 * `postgres` superuser, stopped and removed when the test process exits. Run as root (CI), the
 * server runs as the `postgres` user (or `nobody`), since PostgreSQL refuses root.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { chownSync, existsSync, readdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import pg from 'pg';
import { tempDir } from './tmp.ts';

/** The directory of PostgreSQL's server binaries (initdb, postgres, pg_config): $PG_BIN, else Debian's newest. */
export function postgresBin(): string | undefined {
  const has = (dir: string) => ['initdb', 'postgres', 'pg_config'].every((b) => existsSync(join(dir, b)));
  if (process.env.PG_BIN) return has(process.env.PG_BIN) ? process.env.PG_BIN : undefined;
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root)
    ? readdirSync(root)
        .filter((v) => /^\d+$/.test(v))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  return versions.map((v) => join(root, v, 'bin')).find(has);
}

/** Why a cluster with pgvector cannot be started here, or undefined when it can. */
export function postgresMissing(): string | undefined {
  const bin = postgresBin();
  if (!bin) return 'no PostgreSQL server binaries (initdb, postgres, pg_config)';
  const share = execFileSync(join(bin, 'pg_config'), ['--sharedir'], { encoding: 'utf8' }).trim();
  if (!existsSync(join(share, 'extension', 'vector.control'))) return `no pgvector extension in ${share}/extension`;
  return undefined;
}

/** A user other than root to run the server as: postgres when there is one, else nobody. */
function serverUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const users = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .map((l) => l.split(':'));
  const u = users.find((f) => f[0] === 'postgres') ?? users.find((f) => f[0] === 'nobody');
  if (!u) throw new Error('running as root with neither a postgres nor a nobody user to run PostgreSQL as');
  return { uid: Number(u[2]), gid: Number(u[3]) };
}

/** A port nothing listens on now (the OS's pick, released at once). */
export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as { port: number }).port;
  await new Promise((resolve) => s.close(resolve));
  return port;
}

/** One query on its own connection: its rows. */
export async function sql<T extends pg.QueryResultRow>(url: string, text: string): Promise<T[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query<T>(text)).rows;
  } finally {
    await c.end();
  }
}

export class Cluster {
  private child: ChildProcess | null = null;
  private databases = 0;

  private constructor(
    private readonly bin: string,
    readonly dir: string,
    readonly port: number,
    private readonly user: { uid: number; gid: number } | undefined,
    private readonly settings: Record<string, string>,
  ) {}

  /**
   * initdb and start; the cluster is stopped when the process exits. `settings` (name → value)
   * override the test server's (a benchmark's larger shared_buffers, fsync on).
   */
  static async start(settings: Record<string, string> = {}): Promise<Cluster> {
    const bin = postgresBin();
    if (!bin) throw new Error('no PostgreSQL server binaries: run scripts/install-pgvector.sh');
    const dir = tempDir('ijepa-pg-');
    const user = serverUser();
    if (user) chownSync(dir, user.uid, user.gid);
    execFileSync(
      join(bin, 'initdb'),
      ['-D', join(dir, 'data'), '-U', 'postgres', '--auth=trust', '--no-sync', '-E', 'UTF8', '--locale=C'],
      { stdio: 'pipe', ...user },
    );
    const c = new Cluster(bin, dir, await freePort(), user, settings);
    process.once('exit', () => c.child?.kill('SIGKILL'));
    await c.resume();
    return c;
  }

  /** postgres:// URL of database `db`. */
  url(db = 'postgres'): string {
    return `postgres://postgres@127.0.0.1:${this.port}/${db}`;
  }

  /** A new empty database; its URL. */
  async database(): Promise<string> {
    const name = `t${this.databases++}`;
    const c = new pg.Client({ connectionString: this.url() });
    await c.connect();
    try {
      await c.query(`CREATE DATABASE ${name}`);
    } finally {
      await c.end();
    }
    return this.url(name);
  }

  /** Starts the server (again, after `stop`) and waits until it accepts connections. */
  async resume(): Promise<void> {
    if (this.child) return;
    // Settings for a test server: no fsync (a crash of the machine is not what is tested), small.
    const child = spawn(
      join(this.bin, 'postgres'),
      [
        '-D',
        join(this.dir, 'data'),
        '-p',
        String(this.port),
        '-k',
        this.dir,
        '-c',
        'listen_addresses=127.0.0.1',
        '-c',
        'fsync=off',
        '-c',
        'full_page_writes=off',
        '-c',
        'shared_buffers=32MB',
        '-c',
        'max_connections=60',
        ...Object.entries(this.settings).flatMap(([k, v]) => ['-c', `${k}=${v}`]),
      ],
      { stdio: ['ignore', 'ignore', 'pipe'], ...this.user },
    );
    let log = '';
    child.stderr!.on('data', (d) => (log += d));
    this.child = child;
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`postgres exited (${child.exitCode}): ${log}`);
      const c = new pg.Client({ connectionString: this.url() });
      try {
        await c.connect();
        await c.end();
        return;
      } catch (e) {
        await c.end().catch(() => {});
        if (Date.now() > deadline) throw new Error(`postgres did not start in 20 s (${(e as Error).message}): ${log}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  /** Fast shutdown (connections are closed at once, as in a restart or a failover), and waits for it. */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child) return;
    this.child = null;
    if (child.exitCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGINT');
    await exited;
  }
}
