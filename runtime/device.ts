/**
 * The devices a graph can run on: onnxruntime's CPU provider, and its bundled WebGPU provider.
 * Free of onnxruntime, so that command-line parsing and the serving and evaluation options can
 * name a device without loading it.
 */
export const DEVICES = ['cpu', 'webgpu'] as const;
export type Device = (typeof DEVICES)[number];

/** How to get a WebGPU adapter where there is none; docs/gpu.md has the whole setup. */
export const WEBGPU_HELP =
  'onnxruntime-node runs WebGPU through Dawn, which needs a Vulkan driver on Linux: a GPU driver ' +
  '(NVIDIA containers: NVIDIA_DRIVER_CAPABILITIES must include graphics), or, without a GPU, Mesa ≥ 25 lavapipe ' +
  '(Debian 12: apt-get install mesa-vulkan-drivers/bookworm-backports libvulkan1). `ijepa devices` says what is missing.';
