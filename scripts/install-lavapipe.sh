#!/usr/bin/env bash
# A software Vulkan driver that Dawn (onnxruntime's WebGPU provider) accepts, for WebGPU without a
# GPU: Mesa ≥ 25 lavapipe. Debian 12's own Mesa 22 is refused (shaderUniform*ArrayDynamicIndexing
# required), so it comes from bookworm-backports. Idempotent; needs root (or sudo) and apt.
set -euo pipefail
installed=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true)
if [[ "${installed%%.*}" =~ ^[0-9]+$ ]] && (( ${installed%%.*} >= 25 )) && dpkg-query -W libvulkan1 >/dev/null 2>&1; then
  exit 0
fi
sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
. /etc/os-release
if [[ "${VERSION_CODENAME:-}" == bookworm ]]; then
  if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d; then
    # Backports from the mirror and keyring this machine already uses for bookworm.
    IFS=$'\t' read -r uri keyring < <("$(dirname "$0")/debian-mirror.sh")
    {
      printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\n' "$uri"
      if [[ -n $keyring ]]; then printf 'Signed-By: %s\n' "$keyring"; fi
    } | $sudo tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null
  fi
  $sudo apt-get update -qq
  # The /suite form takes only the driver from backports, not the whole GL stack.
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mesa-vulkan-drivers/bookworm-backports libvulkan1
else
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mesa-vulkan-drivers libvulkan1
fi
