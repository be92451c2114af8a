#!/usr/bin/env bash
# Makes a base image for the Dockerfile (`--build-arg BASE=…`) where no registry is reachable:
# Debian bookworm minbase from this machine's own mirror (mmdebstrap), this machine's Node
# (binary, npm and headers: node-gyp compiles hnswlib-node against the headers, as nodejs.org may
# not be reachable either) and a `node` user (uid 1000), as the official image has. Debian
# bookworm's own nodejs is 18, older than the project needs.
#   scripts/container-base.sh [image]    default ijepa-base:bookworm-node20; REBUILD=1 remakes it
# Idempotent; needs docker, mmdebstrap and root (or sudo).
set -euo pipefail
image=${1:-ijepa-base:bookworm-node20}
if [[ ${REBUILD:-0} != 1 ]] && docker image inspect "$image" >/dev/null 2>&1; then
  echo "$image is there (REBUILD=1 remakes it)"
  exit 0
fi

node=$(readlink -f "$(command -v node)") || { echo "no node on PATH" >&2; exit 1; }
version=$("$node" -p process.versions.node)
IFS=. read -r major minor _ <<<"$version"
if (( major != 20 || minor < 11 )); then
  echo "node $version at $node: the base carries the host's Node, and it must be 20.x, at least 20.11" >&2
  exit 1
fi
prefix=$(dirname "$(dirname "$node")")
npm_dir=$prefix/lib/node_modules/npm
headers=$prefix/include/node
for need in "$npm_dir/bin/npm-cli.js" "$headers/node.h"; do
  [[ -e $need ]] || { echo "no $need beside $node: the base needs Node's npm and headers" >&2; exit 1; }
done
# Copied alone, the binary may rely only on what minbase has: glibc, libstdc++ and libgcc (as
# official builds and NodeSource's do, with OpenSSL, ICU, zlib and libuv built in).
extra=$(ldd "$node" | awk '{print $1}' | grep -Ev '^(linux-vdso|/lib64/ld-linux|lib(c|m|dl|pthread|rt|stdc\+\+|gcc_s)\.so)' || true)
if [[ -n $extra ]]; then
  echo "$node links libraries minbase lacks: $extra" >&2
  exit 1
fi

sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
IFS=$'\t' read -r uri keyring < <("$(dirname "$0")/debian-mirror.sh")
q() { printf '%q' "$1"; }
# The user as the official image makes it; Node where the official image keeps it.
hooks=(
  --customize-hook='chroot "$1" groupadd --gid 1000 node'
  --customize-hook='chroot "$1" useradd --uid 1000 --gid node --shell /bin/bash --create-home node'
  --customize-hook='mkdir -p "$1/usr/local/bin" "$1/usr/local/lib/node_modules" "$1/usr/local/include"'
  --customize-hook="cp $(q "$node") \"\$1/usr/local/bin/node\""
  --customize-hook="cp -a $(q "$npm_dir") \"\$1/usr/local/lib/node_modules/npm\""
  --customize-hook="cp -a $(q "$headers") \"\$1/usr/local/include/node\""
  --customize-hook='ln -s ../lib/node_modules/npm/bin/npm-cli.js "$1/usr/local/bin/npm"'
  --customize-hook='ln -s ../lib/node_modules/npm/bin/npx-cli.js "$1/usr/local/bin/npx"'
)
# No manuals, docs (but their copyright notes) or translations, here or in what the build stage
# installs later, as the official slim image does without.
slim=(
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
)
# dpkg without fsync while the tree is made, where the host has eatmydata (a quarter of the install
# time); the hook leaves no trace of it in the image.
fast=()
if command -v eatmydata >/dev/null && command -v dpkg-architecture >/dev/null; then
  fast=(--hook-dir=/usr/share/mmdebstrap/hooks/eatmydata)
fi
started=$SECONDS
$sudo mmdebstrap --quiet --variant=minbase ${keyring:+--keyring="$keyring"} "${slim[@]}" "${fast[@]}" "${hooks[@]}" bookworm - "$uri" |
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV npm_config_nodedir=/usr/local' \
    --change 'CMD ["node"]' \
    --message "Debian bookworm minbase with Node $version" \
    - "$image" >/dev/null
docker run --rm --network host "$image" sh -c 'node --version && npm --version' >/dev/null
echo "$image: Debian bookworm minbase, node $version, $(docker image inspect -f '{{.Size}}' "$image") bytes, $((SECONDS - started)) s"
