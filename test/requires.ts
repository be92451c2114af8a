/**
 * Prerequisites some tests need beyond `npm ci`: a WebGPU adapter (a Vulkan driver) and a
 * Chromium. Where one is missing its tests are skipped, the reason naming the command that
 * installs it (test/reporter.ts lists them once at the end of the run); where IJEPA_REQUIRE names
 * it (`IJEPA_REQUIRE=webgpu,browser`, or `all`, as CI sets), they run and fail instead.
 */
import { existsSync } from 'node:fs';
import { probeDevices } from '../runtime/devices.ts';

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
} as const;

export type Prerequisite = keyof typeof PREREQUISITES;

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
