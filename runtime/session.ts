/**
 * The one place that creates onnxruntime sessions (and the only onnxruntime-node import): every
 * graph, whether a model package's encoder, a training step or a probe objective, runs through
 * `createSession` with a device and a thread count.
 */
import { availableParallelism } from 'node:os';
import * as ort from 'onnxruntime-node';

export { Tensor } from 'onnxruntime-node';
export type Session = ort.InferenceSession;

export const DEVICES = ['cpu'] as const;
export type Device = (typeof DEVICES)[number];

export interface SessionOptions {
  device?: Device;
  /** Intra-op threads of the CPU provider (default: all cores). */
  threads?: number;
  /** Keep activation buffers between runs: training steps were several times slower without it. */
  memArena?: boolean;
  /** Write an onnxruntime profile (JSON) with this file prefix. */
  profile?: string;
}

export async function createSession(model: string | Uint8Array, o: SessionOptions = {}): Promise<Session> {
  const options: ort.InferenceSession.SessionOptions = {
    intraOpNumThreads: o.threads ?? availableParallelism(),
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    enableCpuMemArena: o.memArena ?? true,
    ...(o.profile ? { enableProfiling: true, profileFilePrefix: o.profile } : {}),
  };
  // create() is overloaded per argument type; both forms load the same graph.
  const create = ort.InferenceSession.create as (
    m: string | Uint8Array,
    opts: ort.InferenceSession.SessionOptions,
  ) => Promise<Session>;
  return create(model, options);
}
