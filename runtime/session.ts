/**
 * The one place that creates onnxruntime sessions: every graph, whether a model package's
 * encoder, a training step or a probe objective, runs through `createSession` with a device and
 * a thread count. `webgpu` is onnxruntime-node's bundled WebGPU provider (Dawn over Vulkan,
 * Metal or D3D12); a device that is asked for and missing is an error, never a silent CPU run.
 */
import { availableParallelism } from 'node:os';
import * as ort from 'onnxruntime-node';
import { WEBGPU_HELP, type Device } from './device.ts';
import { RuntimeError } from './errors.ts';

export { Tensor } from 'onnxruntime-node';
export type Session = ort.InferenceSession;
export type { Device } from './device.ts';

export interface SessionOptions {
  device?: Device;
  /** Intra-op threads of the CPU provider (default: all cores). */
  threads?: number;
  /** Keep activation buffers between runs: training steps were several times slower without it. */
  memArena?: boolean;
  /** Write an onnxruntime profile (JSON) with this file prefix. */
  profile?: string;
  /**
   * Outputs left on the device (webgpu): the next run takes them as inputs without a copy. Read
   * them back with `download` (transfer.ts), never with Tensor.getData(), which aborts the process.
   */
  deviceOutputs?: readonly string[] | 'all';
  /** onnxruntime's log severity (0 = verbose: node placement goes to stderr). */
  logSeverity?: 0 | 1 | 2 | 3 | 4;
  /** Files the graph's external-data initializers point to, by the name they use. */
  externalData?: { path: string; data: Uint8Array }[];
}

export async function createSession(model: string | Uint8Array, o: SessionOptions = {}): Promise<Session> {
  const device = o.device ?? 'cpu';
  const options: ort.InferenceSession.SessionOptions = {
    executionProviders: device === 'webgpu' ? [{ name: 'webgpu' }] : ['cpu'],
    intraOpNumThreads: device === 'webgpu' ? 1 : (o.threads ?? availableParallelism()),
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    enableCpuMemArena: o.memArena ?? true,
    ...(o.logSeverity !== undefined ? { logSeverityLevel: o.logSeverity, logVerbosityLevel: 0 } : {}),
    ...(o.profile ? { enableProfiling: true, profileFilePrefix: o.profile } : {}),
    ...(o.externalData ? { externalData: o.externalData } : {}),
  };
  if (device === 'webgpu' && o.deviceOutputs) {
    options.preferredOutputLocation =
      o.deviceOutputs === 'all'
        ? 'gpu-buffer'
        : Object.fromEntries(o.deviceOutputs.map((n) => [n, 'gpu-buffer' as const]));
  }
  // create() is overloaded per argument type; both forms load the same graph.
  const create = ort.InferenceSession.create as (m: string | Uint8Array, opts: typeof options) => Promise<Session>;
  try {
    return await create(model, options);
  } catch (e) {
    const message = (e as Error).message;
    if (device === 'webgpu' && /WebGPU adapter|webgpu/i.test(message)) {
      throw new RuntimeError(
        'device_unavailable',
        `--device webgpu: no WebGPU adapter (${lastLine(message)}). ${WEBGPU_HELP}`,
      );
    }
    throw e;
  }
}

function lastLine(message: string): string {
  return message
    .trim()
    .split('\n')
    .at(-1)!
    .replace(/^.*?(Failed to get a WebGPU adapter)/, '$1');
}
