#!/usr/bin/env bash
# Packs what scripts/bench-gpu.sh needs on a bare GPU machine (no package registry, perhaps no
# Node, perhaps no Vulkan loader) into .gpu-kit/ (git-ignored), to carry along with the checkout:
#   node.xz                     this machine's node binary (x86-64 Linux)
#   payload.tar.xz              ijepa.mjs and bench-gpu.mjs (the CLI and `npm run bench:gpu`,
#                               bundled: no tsx or esbuild there), recipes/ and variants/ (data the
#                               bundles read next to themselves), and node_modules/ with
#                               onnxruntime-node (linux x64 binaries only), sharp with libvips, hnswlib-node
#   debs/                       the Vulkan loader (Debian 12's libvulkan1)
#   cifar.tar.gz                CIFAR10_PER_CLASS (default 1000) training images per class, from
#                               CIFAR10_TAR (default ../shared/data/cifar10-train-jpeg.tar.gz), if present
# The kit with the checkout must stay under the device runner's 64 MiB; the script prints its size.
set -euo pipefail
cd "$(dirname "$0")/.."
kit=.gpu-kit
rm -rf "$kit" && mkdir -p "$kit/debs"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

xz -T0 -9 -c "$(readlink -f "$(command -v node)")" > "$kit/node.xz"

banner="import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);"
external=(--external:onnxruntime-node --external:sharp --external:hnswlib-node '--external:@tensorflow/*' '--external:./tfjs/*')
payload="$work/payload"
mkdir -p "$payload/node_modules/@img"
echo "import { main } from './cli/index.ts'; await main(process.argv);" |
  node_modules/.bin/esbuild --bundle --platform=node --format=esm --target=node20 --loader=ts --sourcefile=ijepa-entry.ts \
    "${external[@]}" --banner:js="$banner" --outfile="$payload/ijepa.mjs" --log-level=warning
node_modules/.bin/esbuild bench/gpu.ts --bundle --platform=node --format=esm --target=node20 \
  "${external[@]}" --banner:js="$banner" --outfile="$payload/bench-gpu.mjs" --log-level=warning
cp -r train/recipes "$payload/recipes"
cp -r study/variants "$payload/variants"
for pkg in onnxruntime-node onnxruntime-common sharp detect-libc semver @img/colour @img/sharp-linux-x64 @img/sharp-libvips-linux-x64 hnswlib-node bindings file-uri-to-path; do
  cp -r "node_modules/$pkg" "$payload/node_modules/$pkg"
done
rm -rf "$payload/node_modules/hnswlib-node/build/Release/obj.target" "$payload/node_modules/hnswlib-node/src"
find "$payload/node_modules/onnxruntime-node/bin" -mindepth 3 -maxdepth 3 ! -path '*/linux/x64' -exec rm -rf {} +
tar -C "$payload" -cf - . | xz -T0 -9 > "$kit/payload.tar.xz"

(cd "$kit/debs" && apt-get download libvulkan1 2>/dev/null >/dev/null)

tarball=${CIFAR10_TAR:-../shared/data/cifar10-train-jpeg.tar.gz}
if [[ -f "$tarball" ]]; then
  tar xzf "$tarball" -C "$work"
  per=${CIFAR10_PER_CLASS:-1000}
  # awk, not head: head would close the pipe early, which pipefail counts as a failure.
  (cd "$work" && find train -type f | sort | awk -F/ -v per="$per" '++n[$2] <= per' > list && tar czf - -T list) > "$kit/cifar.tar.gz"
fi

du -sh "$kit"/* | sed 's/^/  /'
echo "kit $(du -sm "$kit" | cut -f1) MiB + tracked files $(git ls-files -z | xargs -0 du -cm | tail -1 | cut -f1) MiB (limit 64 MiB)"
