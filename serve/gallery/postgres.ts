/**
 * The gallery in PostgreSQL + pgvector, for any number of server processes on one database: every
 * patch is a row of `ijepa_patches` (float32 `vector`), every image a row of `ijepa_images`. The
 * HNSW index is over the patches' `halfvec` form (inner product of unit vectors, so cosine): half
 * the index at the same recall (`npm run bench:gallery`); it only picks candidates, and every
 * similarity is computed from the float32 vectors.
 *
 * What it promises, as the embedded store does: a commit is one transaction, so a request's
 * changes are all stored or none, and an add answered 2xx is committed (durable by the database's
 * own rules: `synchronous_commit`), and visible to every other replica's next search. Replacing an
 * image upserts its row and swaps its patches under that row's lock, so concurrent writers of one
 * id leave exactly one copy; rows are locked in id order, so writers of overlapping sets do not
 * deadlock (and a deadlock or serialization failure is retried). The encoder's identity is
 * checked on connect. A database that cannot be reached is a GalleryError 'unavailable' (503):
 * the pool makes new connections as requests come, so the server recovers by itself when it
 * returns. A request that failed as the connection dropped during its COMMIT may have been
 * stored: adds are upserts, so retrying one is safe.
 *
 * Search keeps the embedded store's MaxSim: for each query patch its nearest patches from the
 * HNSW index, candidate images ranked by how far their best found similarities rise above each
 * query patch's least found one, then each candidate scored exactly over all its patches — one
 * SQL statement, one round trip.
 *
 * The schema is versioned (`ijepa_schema`): migrations run at connect in one transaction under an
 * advisory lock, so replicas starting together apply each once.
 */
import pg from 'pg';
import { GalleryError } from './errors.ts';
import {
  centred,
  centredCosine,
  nearestCandidates,
  normalize,
  searchCandidates,
  type Change,
  type Identity,
  type ImageInfo,
  type PatchHit,
  type SearchHit,
} from './gallery.ts';
import type { GalleryStore, Sample, SearchOptions } from './store.ts';

/** Whether `--gallery` names a database rather than a directory. */
export function isDatabaseUrl(target: string): boolean {
  return /^postgres(ql)?:\/\//i.test(target);
}

/** `url` without its password, for messages and logs. */
export function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return 'postgres://(unparsable URL)';
  }
}

/** pg_advisory_xact_lock key of the migrations: 'ijepa' in ASCII. */
const MIGRATION_LOCK = '452756598881';

/** Migration n + 1 (a statement list), for embeddings of `dim` dimensions. Append only. */
const MIGRATIONS: ((dim: number) => string)[] = [
  (dim) => `
    CREATE EXTENSION IF NOT EXISTS vector;
    CREATE TABLE ijepa_gallery (
      one boolean PRIMARY KEY DEFAULT true CHECK (one),
      model_id text NOT NULL,
      dim int NOT NULL,
      encoder text NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      version bigint NOT NULL DEFAULT 0,
      images bigint NOT NULL DEFAULT 0
    );
    CREATE SEQUENCE ijepa_added;
    CREATE TABLE ijepa_images (
      id text PRIMARY KEY,
      added bigint NOT NULL DEFAULT nextval('ijepa_added'),
      added_at timestamptz NOT NULL,
      metadata json,
      grid_rows int NOT NULL,
      grid_cols int NOT NULL,
      pooled vector(${dim}) NOT NULL,
      image bytea
    );
    CREATE INDEX ijepa_images_added ON ijepa_images (added);
    CREATE TABLE ijepa_patches (
      image_id text NOT NULL REFERENCES ijepa_images (id) ON DELETE CASCADE,
      p int NOT NULL,
      embedding vector(${dim}) NOT NULL,
      PRIMARY KEY (image_id, p)
    );
    CREATE INDEX ijepa_patches_hnsw ON ijepa_patches
      USING hnsw ((embedding::halfvec(${dim})) halfvec_ip_ops) WITH (m = 16, ef_construction = 64);
  `,
];

/** The schema version this code writes. */
export const SCHEMA_VERSION = MIGRATIONS.length;

/**
 * Each connection's settings. HNSW search breadth: the embedded store's (hnsw.ts `searchEf` up to
 * 200k patches); an iterative scan fills a LIMIT beyond it (k > 32) instead of stopping short. No
 * JIT: the planner's cost for a search's per-candidate scans passes its thresholds, and compiling
 * took 1.8 s of a 2.2 s search over 600 images (EXPLAIN ANALYZE), the query itself 0.1 s.
 * Sent as startup options, so every connection has them before its first query.
 */
const SESSION = '-c hnsw.ef_search=128 -c hnsw.iterative_scan=relaxed_order -c jit=off';

/**
 * The query patches $1 (vector text) as rows: i, v (the vector), h (as halfvec, what the index is
 * ordered by).
 */
const queryPatches = (dim: number) => `
  q AS MATERIALIZED (
    SELECT (t.i - 1)::int AS i, t.v::vector AS v, t.v::halfvec(${dim}) AS h
    FROM unnest($1::text[]) WITH ORDINALITY AS t(v, i)
  )`;

/** The $2 patches the HNSW index finds nearest to query patch `q`, with their exact similarity. */
const indexed = (dim: number) => `
  SELECT image_id, p, embedding, -(embedding <#> q.v) AS sim FROM ijepa_patches
  ORDER BY embedding::halfvec(${dim}) <#> q.h LIMIT $2`;

/** Nearest images by MaxSim: $1 query patches (vector text), $2 index hits per patch, $3 candidates (null: all), $4 k, $5 pooled query. */
const search = (dim: number) => `
  WITH ${queryPatches(dim)},
  found AS (SELECT q.i, h.image_id, h.sim FROM q CROSS JOIN LATERAL (${indexed(dim)}) AS h),
  best AS (SELECT i, image_id, max(sim) AS s FROM found GROUP BY i, image_id),
  lowest AS (SELECT i, min(sim) AS l FROM found GROUP BY i),
  candidates AS (
    SELECT b.image_id FROM best AS b JOIN lowest USING (i)
    GROUP BY b.image_id ORDER BY sum(b.s - lowest.l) DESC, b.image_id LIMIT $3
  ),
  exact AS MATERIALIZED (
    SELECT c.image_id, q.i, m.p, m.sim
    FROM candidates AS c CROSS JOIN q CROSS JOIN LATERAL (
      SELECT x.p, -(x.embedding <#> q.v) AS sim FROM ijepa_patches AS x
      WHERE x.image_id = c.image_id ORDER BY sim DESC, x.p LIMIT 1
    ) AS m
  ),
  top AS (SELECT image_id, sum(sim) AS total FROM exact GROUP BY image_id ORDER BY total DESC, image_id LIMIT $4)
  SELECT img.id, img.metadata, img.grid_cols AS cols, -(img.pooled <#> $5::vector) AS pooled,
    array_agg(e.p ORDER BY e.i) AS ps, array_agg(e.sim ORDER BY e.i) AS sims
  FROM top AS t JOIN ijepa_images AS img ON img.id = t.image_id JOIN exact AS e ON e.image_id = t.image_id
  GROUP BY img.id, t.total
  ORDER BY t.total DESC, img.id`;

/** Index candidates for each query: $1 queries (vector text), $2 per query; reranked in JS. */
const nearest = (dim: number) => `
  WITH ${queryPatches(dim)}
  SELECT q.i, h.image_id AS id, h.p, img.grid_cols AS cols, h.embedding::text AS embedding
  FROM q CROSS JOIN LATERAL (${indexed(dim)}) AS h JOIN ijepa_images AS img ON img.id = h.image_id`;

const UPSERT = `
  INSERT INTO ijepa_images AS x (id, added_at, metadata, grid_rows, grid_cols, pooled, image)
  VALUES ($1, $2, $3, $4, $5, $6, $7)
  ON CONFLICT (id) DO UPDATE SET added = nextval('ijepa_added'), added_at = EXCLUDED.added_at,
    metadata = EXCLUDED.metadata, grid_rows = EXCLUDED.grid_rows, grid_cols = EXCLUDED.grid_cols,
    pooled = EXCLUDED.pooled, image = EXCLUDED.image
  RETURNING (xmax = 0) AS inserted`;

const PATCHES = `
  INSERT INTO ijepa_patches (image_id, p, embedding)
  SELECT $1, (t.i - 1)::int, t.v::vector FROM unnest($2::text[]) WITH ORDINALITY AS t(v, i)`;

/** pgvector's text form of each `dim`-long row of `v` (JS prints a float32 exactly: it reads back the same). */
function vectors(v: Float32Array, dim: number): string[] {
  const out: string[] = [];
  for (let o = 0; o < v.length; o += dim) out.push(`[${v.subarray(o, o + dim).join(',')}]`);
  return out;
}

const fromText = (s: string) => Float32Array.from(JSON.parse(s) as number[]);

/** Connection failures (the server down, restarting, unreachable): the request may succeed later. */
const UNREACHABLE = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  // admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections
  '57P01',
  '57P02',
  '57P03',
  '53300',
]);

function unreachable(e: unknown): boolean {
  const err = e as { code?: string; message?: string; errors?: unknown[] };
  if (!err || typeof err !== 'object') return false;
  if (err.code && (UNREACHABLE.has(err.code) || err.code.startsWith('08'))) return true;
  if (Array.isArray(err.errors) && err.errors.some(unreachable)) return true;
  return /Connection terminated|connection timeout|timeout exceeded when trying to connect|Client has encountered a connection error|not queryable/i.test(
    err.message ?? '',
  );
}

/** Retried whole: a deadlock or serialization failure. */
const RETRY = new Set(['40P01', '40001']);

interface ImageRow {
  id: string;
  metadata: Record<string, unknown> | null;
  grid_rows: number;
  grid_cols: number;
  added_at: Date;
  has_image: boolean;
}

const INFO = 'id, metadata, grid_rows, grid_cols, added_at, image IS NOT NULL AS has_image';

function info(r: ImageRow): ImageInfo {
  return {
    id: r.id,
    ...(r.metadata === null ? {} : { metadata: r.metadata }),
    patches: r.grid_rows * r.grid_cols,
    grid: [r.grid_rows, r.grid_cols],
    addedAt: r.added_at.toISOString(),
    image: r.has_image,
  };
}

/** Longest a health check (/readyz) waits for the database. */
const HEALTH_MS = 2000;

export interface PostgresOptions {
  /** Connections to the database this process may hold (node-postgres' pool). */
  connections?: number;
  /** How long a request waits for a connection before the database counts as unavailable. */
  connectTimeoutMs?: number;
}

export class PostgresStore implements GalleryStore {
  private readonly sql: { search: string; nearest: string };

  private constructor(
    private readonly pool: pg.Pool,
    readonly where: string,
    readonly dim: number,
  ) {
    this.sql = { search: search(dim), nearest: nearest(dim) };
  }

  /**
   * Connects to the database at `url`, migrates its schema to this version, and checks (or, on a
   * new database, records) whose embeddings it holds. Throws GalleryError: 'unavailable' when it
   * cannot be reached, 'mismatch' for another model or encoder, or a schema newer than this code.
   */
  static async open(
    url: string,
    id: Identity,
    log: (s: string) => void = () => {},
    o: PostgresOptions = {},
  ): Promise<PostgresStore> {
    const where = redact(url);
    const pool = new pg.Pool({
      connectionString: url,
      max: o.connections ?? 10,
      connectionTimeoutMillis: o.connectTimeoutMs ?? 5000,
      keepAlive: true,
      application_name: 'ijepa',
      options: SESSION,
    });
    let lost = 0;
    // An idle connection the server closed (a restart) is dropped by the pool; new ones are made
    // as requests need them. Without a listener the 'error' would end the process.
    pool.on('error', (e) => {
      if (lost++ === 0) log(`gallery: lost a connection to ${where} (${e.message}); reconnecting as requests come`);
    });
    pool.on('connect', (client) => {
      lost = 0;
      // A connection that fails while checked out between two queries says so to its next query.
      client.on('error', () => {});
    });
    const store = new PostgresStore(pool, where, id.dim);
    try {
      await store.migrate(id, log);
    } catch (e) {
      await pool.end().catch(() => {});
      throw store.failure(e);
    }
    return store;
  }

  private async migrate(id: Identity, log: (s: string) => void): Promise<void> {
    const c = await this.pool.connect();
    let broken: Error | undefined;
    try {
      await c.query('BEGIN');
      await c.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
      await c.query('CREATE TABLE IF NOT EXISTS ijepa_schema (version int NOT NULL)');
      let version: number | undefined = (await c.query('SELECT version FROM ijepa_schema')).rows[0]?.version;
      if (version === undefined) {
        await c.query('INSERT INTO ijepa_schema VALUES (0)');
        version = 0;
      }
      if (version > MIGRATIONS.length)
        throw new GalleryError(
          'mismatch',
          `gallery ${this.where} has schema version ${version}; this server knows versions up to ${MIGRATIONS.length}: upgrade it`,
        );
      const from = version;
      for (; version < MIGRATIONS.length; version++) await c.query(MIGRATIONS[version](id.dim));
      await c.query('UPDATE ijepa_schema SET version = $1', [version]);
      const ext = (await c.query("SELECT extversion FROM pg_extension WHERE extname = 'vector'")).rows[0]?.extversion;
      const [major, minor] = String(ext).split('.').map(Number);
      if (!(major > 0 || minor >= 8))
        throw new GalleryError(
          'mismatch',
          `gallery ${this.where}: pgvector ${ext} is installed; the gallery needs 0.8 or newer (iterative index scans)`,
        );
      await this.checkIdentity(c, id, log);
      await c.query('COMMIT');
      if (version !== from) log(`gallery: ${this.where} migrated from schema version ${from} to ${version}`);
    } catch (e) {
      if (unreachable(e)) broken = e as Error;
      else await c.query('ROLLBACK').catch((r: Error) => (broken = r));
      throw e;
    } finally {
      c.release(broken);
    }
  }

  private async checkIdentity(c: pg.PoolClient, id: Identity, log: (s: string) => void): Promise<void> {
    const { rows } = await c.query('SELECT model_id, dim, encoder FROM ijepa_gallery');
    if (rows.length === 0) {
      await c.query('INSERT INTO ijepa_gallery (model_id, dim, encoder) VALUES ($1, $2, $3)', [
        id.modelId,
        id.dim,
        id.encoder,
      ]);
      log(
        `gallery: ${this.where} is new; it holds the embeddings of model '${id.modelId}', encoder ${id.encoder.slice(0, 16)}`,
      );
      return;
    }
    const [g] = rows as { model_id: string; dim: number; encoder: string }[];
    const hint =
      'Use another database for this package, or re-add the images through it into a new one (a PostgreSQL gallery cannot be re-embedded in place).';
    if (g.model_id !== id.modelId || g.dim !== id.dim)
      throw new GalleryError(
        'mismatch',
        `gallery ${this.where} was built with model '${g.model_id}' (dim ${g.dim}); this server runs '${id.modelId}' (dim ${id.dim}). ${hint}`,
      );
    if (g.encoder !== id.encoder)
      throw new GalleryError(
        'mismatch',
        `gallery ${this.where} was built with encoder ${g.encoder.slice(0, 16)} (sha256, model '${g.model_id}'); this package's encoder is ${id.encoder.slice(0, 16)} (model '${id.modelId}'): their embeddings are not comparable. ${hint}`,
      );
  }

  /** The GalleryError a failure from the database is to the routes; others are passed on as they are. */
  private failure(e: unknown): unknown {
    if (e instanceof GalleryError) return e;
    if (unreachable(e))
      return new GalleryError(
        'unavailable',
        `gallery ${this.where} is unavailable: the database cannot be reached (${(e as Error).message || (e as { code?: string }).code}); retry later`,
      );
    const code = (e as { code?: string }).code ?? '';
    if (code === '53100')
      return new GalleryError(
        'storage',
        `gallery ${this.where}: the database's disk is full (${(e as Error).message})`,
      );
    if (code.startsWith('22'))
      return new GalleryError('invalid', `gallery ${this.where} cannot store this: ${(e as Error).message}`);
    return e;
  }

  /** One statement outside a transaction. */
  private async query<R extends pg.QueryResultRow>(sql: string, params: unknown[] = []): Promise<pg.QueryResult<R>> {
    try {
      return await this.pool.query<R>(sql, params);
    } catch (e) {
      throw this.failure(e);
    }
  }

  /** `work` in one transaction, retried whole after a deadlock or serialization failure. */
  private async transaction<T>(work: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      let c: pg.PoolClient;
      try {
        c = await this.pool.connect();
      } catch (e) {
        throw this.failure(e);
      }
      let broken: Error | undefined;
      try {
        await c.query('BEGIN');
        const out = await work(c);
        await c.query('COMMIT');
        return out;
      } catch (e) {
        if (unreachable(e)) broken = e as Error;
        else await c.query('ROLLBACK').catch((r: Error) => (broken = r));
        if (RETRY.has((e as { code?: string }).code ?? '') && attempt < 5) continue;
        throw this.failure(e);
      } finally {
        c.release(broken);
      }
    }
  }

  async size(): Promise<number> {
    return Number((await this.query('SELECT images FROM ijepa_gallery')).rows[0].images);
  }

  async version(): Promise<number> {
    return Number((await this.query('SELECT version FROM ijepa_gallery')).rows[0].version);
  }

  async commit(changes: Change[]): Promise<number> {
    if (changes.length === 0) return this.size();
    const d = this.dim;
    const addedAt = new Date().toISOString();
    // In id order (stable, so one id's changes keep theirs): writers lock rows in one order.
    const key = (c: Change) => ('add' in c ? c.add.id : c.remove);
    const steps = changes
      .map((c) => {
        if (!('add' in c)) return { remove: c.remove };
        const a = c.add;
        let metadata: string | null = null;
        try {
          metadata = a.metadata === undefined ? null : JSON.stringify(a.metadata);
        } catch (e) {
          throw new GalleryError('invalid', `metadata of '${a.id}' cannot be stored: ${(e as Error).message}`);
        }
        return {
          add: [
            a.id,
            addedAt,
            metadata,
            a.rows,
            a.cols,
            vectors(normalize(a.pooled, d), d)[0],
            a.image?.length ? Buffer.from(a.image) : null,
          ],
          patches: vectors(normalize(a.patches, d), d),
        };
      })
      .map((s, i) => ({ s, id: key(changes[i]) }))
      .sort((x, y) => (x.id < y.id ? -1 : x.id > y.id ? 1 : 0))
      .map((x) => x.s);
    return this.transaction(async (c) => {
      let delta = 0;
      for (const s of steps) {
        if ('remove' in s) {
          delta -= (await c.query('DELETE FROM ijepa_images WHERE id = $1', [s.remove])).rowCount ?? 0;
          continue;
        }
        const id = s.add[0];
        if ((await c.query(UPSERT, s.add)).rows[0].inserted) delta++;
        else await c.query('DELETE FROM ijepa_patches WHERE image_id = $1', [id]);
        await c.query(PATCHES, [id, s.patches]);
      }
      // Last, so that this row (which every commit takes) is held for as short as can be.
      const r = await c.query('UPDATE ijepa_gallery SET version = version + 1, images = images + $1 RETURNING images', [
        delta,
      ]);
      return Number(r.rows[0].images);
    });
  }

  async remove(id: string): Promise<boolean> {
    return this.transaction(async (c) => {
      if (!(await c.query('DELETE FROM ijepa_images WHERE id = $1', [id])).rowCount) return false;
      await c.query('UPDATE ijepa_gallery SET version = version + 1, images = images - 1');
      return true;
    });
  }

  async get(id: string): Promise<ImageInfo | undefined> {
    const { rows } = await this.query<ImageRow>(`SELECT ${INFO} FROM ijepa_images WHERE id = $1`, [id]);
    return rows[0] && info(rows[0]);
  }

  async stored(ids: string[]): Promise<Set<string>> {
    const { rows } = await this.query<{ id: string }>('SELECT id FROM ijepa_images WHERE id = ANY($1::text[])', [ids]);
    return new Set(rows.map((r) => r.id));
  }

  async list(offset: number, limit: number): Promise<{ total: number; items: ImageInfo[] }> {
    // One statement: the total and the page are of one snapshot.
    const { rows } = await this.query<ImageRow & { total: string }>(
      `WITH page AS (SELECT ${INFO}, added FROM ijepa_images ORDER BY added OFFSET $1 LIMIT $2)
       SELECT g.images AS total, page.* FROM ijepa_gallery AS g LEFT JOIN page ON true ORDER BY page.added`,
      [offset, limit],
    );
    return { total: Number(rows[0].total), items: rows.filter((r) => r.id !== null).map(info) };
  }

  async image(id: string): Promise<Buffer | undefined> {
    const { rows } = await this.query<{ image: Buffer | null }>('SELECT image FROM ijepa_images WHERE id = $1', [id]);
    return rows[0]?.image ?? undefined;
  }

  async sample(limit: number): Promise<Sample> {
    // The embedded store's picks: positions floor(i · max(1, total / limit)) in adding order.
    const { rows } = await this.query<{
      version: string;
      total: string;
      id: string | null;
      pooled: string | null;
      metadata: Record<string, unknown> | null;
    }>(
      `WITH g AS (SELECT version, images FROM ijepa_gallery),
       pick AS (
         SELECT DISTINCT floor(i * greatest(1, g.images::float8 / $1))::bigint AS r
         FROM g, generate_series(0, least($1, g.images) - 1) AS i
       ),
       ranked AS (SELECT id, pooled, metadata, row_number() OVER (ORDER BY added) - 1 AS r FROM ijepa_images)
       SELECT g.version, g.images AS total, s.id, s.pooled::text AS pooled, s.metadata
       FROM g LEFT JOIN (ranked AS s JOIN pick USING (r)) ON true ORDER BY s.r`,
      [limit],
    );
    const picked = rows.filter((r) => r.id !== null);
    const pooled = new Float32Array(picked.length * this.dim);
    picked.forEach((r, i) => pooled.set(fromText(r.pooled!), i * this.dim));
    return {
      version: Number(rows[0].version),
      total: Number(rows[0].total),
      ids: picked.map((r) => r.id!),
      pooled,
      metadata: picked.map((r) => r.metadata ?? undefined),
    };
  }

  async nearestPatches(
    queries: Float32Array,
    count: number,
    k: number,
    o: { signal?: AbortSignal } = {},
  ): Promise<PatchHit[][]> {
    o.signal?.throwIfAborted();
    const d = this.dim;
    const qs = Array.from({ length: count }, (_, t) => centred(queries.subarray(t * d, (t + 1) * d)));
    const text = qs.map((q) => vectors(q, d)[0]);
    const { rows } = await this.query<{ i: number; id: string; p: number; cols: number; embedding: string }>(
      this.sql.nearest,
      [text, nearestCandidates(k)],
    );
    o.signal?.throwIfAborted();
    const out: PatchHit[][] = qs.map(() => []);
    const sums = qs.map((q) => q.reduce((a, x) => a + x, 0));
    for (const r of rows) {
      const s = centredCosine(qs[r.i], sums[r.i], fromText(r.embedding), 0);
      out[r.i].push({ id: r.id, patch: [Math.floor(r.p / r.cols), r.p % r.cols], similarity: s });
    }
    return out.map((hits) => hits.sort((a, b) => b.similarity - a.similarity).slice(0, k));
  }

  async search(
    query: Float32Array,
    positions: [number, number][],
    pooled: Float32Array,
    k: number,
    withPooled: boolean,
    o: SearchOptions = {},
  ): Promise<SearchHit[]> {
    o.signal?.throwIfAborted();
    const d = this.dim;
    const { rows } = await this.query<{
      id: string;
      metadata: Record<string, unknown> | null;
      cols: number;
      pooled: number;
      ps: number[];
      sims: number[];
    }>(this.sql.search, [
      vectors(normalize(query, d), d),
      searchCandidates(k),
      Number.isFinite(o.candidates ?? Number.POSITIVE_INFINITY) ? o.candidates : null,
      k,
      vectors(normalize(pooled, d), d)[0],
    ]);
    o.signal?.throwIfAborted();
    const hits = rows.map((r): SearchHit => {
      const matches = r.ps.map((p, i) => ({
        query: positions[i],
        gallery: [Math.floor(p / r.cols), p % r.cols] as [number, number],
        similarity: r.sims[i],
      }));
      const total = r.sims.reduce((a, s) => a + s, 0);
      return {
        id: r.id,
        ...(r.metadata === null ? {} : { metadata: r.metadata }),
        score: total / positions.length,
        matches,
        ...(withPooled ? { pooledScore: r.pooled } : {}),
      };
    });
    return hits.sort((a, b) => b.score - a.score);
  }

  /** Answers within HEALTH_MS: a balancer's health check should not wait out a connect timeout. */
  async health(): Promise<'ok' | 'unavailable'> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'unavailable'>((resolve) => {
      timer = setTimeout(() => resolve('unavailable'), HEALTH_MS);
    });
    const answer = this.pool.query('SELECT 1').then(
      () => 'ok' as const,
      () => 'unavailable' as const,
    );
    try {
      return await Promise.race([answer, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}
