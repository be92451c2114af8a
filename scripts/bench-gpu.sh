#!/usr/bin/env bash
# `npm run bench:gpu` on a bare GPU machine, from the kit scripts/gpu-kit.sh packed (.gpu-kit/,
# carried with the checkout): installs the Vulkan loader from the kit's .deb when the image lacks
# it, points Vulkan at NVIDIA's driver file when there is one, and uses the kit's Node when the
# machine has none. Extra environment (BENCH_*) passes through; see bench/gpu.ts.
# For NVIDIA containers, NVIDIA_DRIVER_CAPABILITIES must include `graphics` (the Vulkan driver).
set -euo pipefail
cd "$(dirname "$0")/.."
kit=$PWD/.gpu-kit
[[ -d $kit ]] || { echo "no $kit: run scripts/gpu-kit.sh first, and carry .gpu-kit" >&2; exit 2; }
unpack() { python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$@"; }

if ! ldconfig -p | grep -q 'libvulkan.so.1'; then
  for f in "$kit"/debs/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
if [[ -z ${VK_DRIVER_FILES:-} ]]; then
  for f in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json; do
    if [[ -f $f ]]; then export VK_DRIVER_FILES=$f; break; fi
  done
fi

run=$(mktemp -d)
node=$(command -v node || true)
if [[ -z $node ]]; then
  unpack "$kit/node.xz" "$run/node" && chmod +x "$run/node"
  node=$run/node
fi
unpack "$kit/payload.tar.xz" "$run/payload.tar" && tar -xf "$run/payload.tar" -C "$run" && rm "$run/payload.tar"
if [[ -f $kit/cifar.tar.gz && -z ${BENCH_CIFAR:-} ]]; then
  mkdir -p "$run/cifar" && tar -xzf "$kit/cifar.tar.gz" -C "$run/cifar"
  export BENCH_CIFAR=$run/cifar/train
fi
export BENCH_IJEPA=$run/ijepa.mjs BENCH_TORCH_STEP=$PWD/bench/gpu/torch_step.py
echo "node $("$node" --version), VK_DRIVER_FILES=${VK_DRIVER_FILES:-(loader default)}" >&2
exec "$node" "$run/bench-gpu.mjs"
