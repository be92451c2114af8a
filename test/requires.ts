/**
 * Prerequisites some tests need beyond `npm ci`: a WebGPU adapter (a Vulkan driver), a Chromium,
 * a container engine with a local base image, PostgreSQL with pgvector, and HAProxy (a load
 * balancer in front of server replicas). Where one is missing its tests are skipped, the reason
 * naming the command that installs it (test/reporter.ts lists them once at the end of
 * the run); where IJEPA_REQUIRE names it (`IJEPA_REQUIRE=webgpu,browser`, or `all`, as CI sets),
 * they run and fail instead.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { probeDevices } from '../runtime/devices.ts';
import { postgresMissing } from './postgres.ts';

export const PREREQUISITES = {
  webgpu: {
    install: 'scripts/install-lavapipe.sh (a software Vulkan driver; needs root), or a GPU with its Vulkan driver',
    missing(): string | undefined {
      const webgpu = probeDevices().find((d) => d.device === 'webgpu')!;
      return webgpu.available ? undefined : 'no WebGPU adapter';
    },
  },
  browser: {
    install: 'apt-get install chromium (or set CHROMIUM to a Chromium binary)',
    missing(): string | undefined {
      return existsSync(chromiumPath()) ? undefined : `no browser at ${chromiumPath()}`;
    },
  },
  container: {
    install: 'apt-get install docker.io mmdebstrap, then scripts/start-dockerd.sh and scripts/container-base.sh (root)',
    missing(): string | undefined {
      const docker = (...args: string[]) => spawnSync('docker', args, { encoding: 'utf8', timeout: 20_000 });
      const version = docker('version', '--format', '{{.Server.Version}}');
      if (version.error) return `no docker client (${version.error.message})`;
      if (version.status !== 0) return 'no docker daemon answering';
      const base = containerBase();
      return docker('image', 'inspect', base).status === 0 ? undefined : `no base image ${base}`;
    },
  },
  postgres: {
    install:
      'scripts/install-pgvector.sh (PostgreSQL 15, and pgvector built from the Debian source package; needs root)',
    missing: postgresMissing,
  },
  balancer: {
    install: 'apt-get install haproxy',
    missing(): string | undefined {
      const r = spawnSync(haproxyPath(), ['-v'], { encoding: 'utf8', timeout: 20_000 });
      return r.status === 0 ? undefined : `no haproxy at ${haproxyPath()}`;
    },
  },
} as const;

export type Prerequisite = keyof typeof PREREQUISITES;

/** The image the container test builds on: scripts/container-base.sh's, or IJEPA_BASE_IMAGE (say, node:20-bookworm-slim). */
export function containerBase(): string {
  return process.env.IJEPA_BASE_IMAGE ?? 'ijepa-base:bookworm-node20';
}

/** HAProxy, the balancer the replica tests run: $HAPROXY, else Debian's (in /usr/sbin, off a user's PATH), else the PATH's. */
export function haproxyPath(): string {
  return process.env.HAPROXY ?? (existsSync('/usr/sbin/haproxy') ? '/usr/sbin/haproxy' : 'haproxy');
}

export function chromiumPath(): string {
  return process.env.CHROMIUM ?? '/usr/bin/chromium';
}

/** The prerequisites IJEPA_REQUIRE names; an unknown name is an error, so a typo cannot turn failures into skips. */
export function required(env = process.env.IJEPA_REQUIRE ?? ''): Set<Prerequisite> {
  const names = env
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const known = Object.keys(PREREQUISITES) as Prerequisite[];
  if (names.includes('all')) return new Set(known);
  for (const n of names)
    if (!known.includes(n as Prerequisite))
      throw new Error(`IJEPA_REQUIRE names '${n}'; known: ${known.join(', ')}, all`);
  return new Set(names as Prerequisite[]);
}

/**
 * `false` when the tests needing `name` should run (present, or required), else the skip reason:
 * what is missing and how to install it. Pass it as a test's `skip` option.
 */
export function skipUnless(name: Prerequisite): string | false {
  const p = PREREQUISITES[name];
  const missing = p.missing();
  if (!missing || required().has(name)) return false;
  return `${missing}; install: ${p.install}`;
}
