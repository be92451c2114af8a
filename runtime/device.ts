/** The devices a graph can run on: onnxruntime's CPU provider, and its bundled WebGPU provider. */
export const DEVICES = ['cpu', 'webgpu'] as const;
export type Device = (typeof DEVICES)[number];
