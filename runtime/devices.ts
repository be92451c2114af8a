/**
 * What this machine can run graphs on, for `ijepa devices`: the CPU provider, and whether
 * onnxruntime's WebGPU provider finds an adapter, with the adapter's name and limits (from
 * vulkaninfo, where installed) or the reason it found none.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism, cpus } from 'node:os';
import { WEBGPU_HELP, type Device } from './device.ts';
import { identityGraph } from './transfer.ts';

export interface DeviceReport {
  device: Device;
  available: boolean;
  /** Lines worth reading: adapter, driver, limits; or what is missing. */
  detail: string[];
}

/** Creates a WebGPU session in a child process: Dawn reports why it found no adapter on stderr only. */
const CHILD = `
const ort = require(process.argv[1]);
ort.InferenceSession.create(Buffer.from(process.argv[2], 'base64'), { executionProviders: ['webgpu'] })
  .then((s) => s.run({ x: new ort.Tensor('float32', new Float32Array([1, 2]), [2]) }).then(() => s.release()))
  .then(() => console.log('webgpu ok'), (e) => { console.error('ERROR ' + e.message.trim().split('\\n').pop()); process.exitCode = 2; });
`;

/** Dawn's notices that say nothing about availability. */
const NOISE = /artificially reduced|XDG_RUNTIME_DIR/;

/** This machine's CPU model, as reports and run records name it. */
export function cpuName(): string {
  return cpus()[0]?.model.trim() ?? 'unknown CPU';
}

/** Where onnxruntime runs on the CPU with `threads` intra-op threads, as run records name it. */
export function cpuHardware(threads: number): string {
  return `onnxruntime on the CPU, ${threads} thread(s), ${cpuName()}`;
}

export function probeDevices(): DeviceReport[] {
  const ortPath = createRequire(import.meta.url).resolve('onnxruntime-node');
  const version = (createRequire(import.meta.url)('onnxruntime-node/package.json') as { version: string }).version;
  const cpu: DeviceReport = {
    device: 'cpu',
    available: true,
    detail: [`${availableParallelism()} threads, ${cpuName()}`, `onnxruntime-node ${version}`],
  };
  const child = spawnSync(process.execPath, ['-e', CHILD, ortPath, Buffer.from(identityGraph()).toString('base64')], {
    encoding: 'utf8',
    timeout: 120_000,
  });
  const available = child.status === 0 && child.stdout.includes('webgpu ok');
  const said = child.stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !NOISE.test(l));
  const detail = [...adapterDetail()];
  if (!available) detail.push(...said.map((l) => l.replace(/^ERROR /, 'onnxruntime: ')), ...vulkanSetup(), WEBGPU_HELP);
  return [cpu, { device: 'webgpu', available, detail }];
}

/** Adapter, driver and the limits that bound tensor sizes, from `vulkaninfo` (Debian: vulkan-tools). */
function adapterDetail(): string[] {
  let summary: string;
  let full: string;
  try {
    summary = execFileSync('vulkaninfo', ['--summary'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
      timeout: 30_000,
    });
    full = execFileSync('vulkaninfo', [], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
      timeout: 30_000,
      maxBuffer: 64 << 20,
    });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT')
      return ['adapter details: install vulkaninfo (Debian: vulkan-tools) to list them'];
    return ['vulkaninfo found no Vulkan device'];
  }
  const field = (text: string, key: string) => text.match(new RegExp(`^\\s*${key}\\s*=\\s*(.+)$`, 'm'))?.[1].trim();
  const out: string[] = [];
  const name = field(summary, 'deviceName');
  if (name)
    out.push(`adapter: ${name} (${field(summary, 'deviceType')?.replace('PHYSICAL_DEVICE_TYPE_', '').toLowerCase()})`);
  const driver = field(summary, 'driverInfo') ?? field(summary, 'driverName');
  if (driver) out.push(`driver: ${driver}, Vulkan ${field(summary, 'apiVersion')}`);
  const limits = ['maxStorageBufferRange', 'maxComputeSharedMemorySize', 'maxComputeWorkGroupInvocations']
    .map((k) => [k, field(full, k)])
    .filter(([, v]) => v);
  if (limits.length) out.push(`limits: ${limits.map(([k, v]) => `${k} ${v}`).join(', ')}`);
  const heap = full.match(
    /size\s*=\s*\d+ \(0x[0-9a-f]+\) \(([\d.]+ [KMGT]iB)\)\s*\n\s*budget[^\n]*\n[\s\S]*?MEMORY_HEAP_DEVICE_LOCAL_BIT/,
  );
  if (heap) out.push(`device-local memory: ${heap[1]}`);
  return out;
}

/** Which pieces of a Vulkan setup are present, to say what to install. */
function vulkanSetup(): string[] {
  const out: string[] = [];
  let loader = false;
  try {
    loader = execFileSync('ldconfig', ['-p'], { encoding: 'utf8' }).includes('libvulkan.so.1');
  } catch {
    // No ldconfig (not Linux): nothing to say about the loader.
    return out;
  }
  out.push(
    loader ? 'Vulkan loader: libvulkan.so.1 found' : 'Vulkan loader: libvulkan.so.1 missing (Debian: libvulkan1)',
  );
  const dirs = ['/usr/share/vulkan/icd.d', '/etc/vulkan/icd.d'].filter(existsSync);
  const icds = dirs.flatMap((d) => readdirSync(d).map((f) => `${d}/${f}`));
  const pinned = process.env.VK_DRIVER_FILES ?? process.env.VK_ICD_FILENAMES;
  out.push(
    pinned
      ? `Vulkan drivers: VK_DRIVER_FILES=${pinned}`
      : `Vulkan drivers: ${icds.length ? icds.join(', ') : 'none installed'}`,
  );
  return out;
}
