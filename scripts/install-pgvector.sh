#!/usr/bin/env bash
# PostgreSQL 15 and pgvector, for the gallery's PostgreSQL store and its tests. Debian 12 packages
# PostgreSQL 15 but not pgvector (nor do its backports), so pgvector is built from Debian trixie's
# source package, which builds against 15: a temporary deb-src entry on the mirror and keyring this
# machine already uses (scripts/debian-mirror.sh), `apt-get source`, make, make install; the entry
# is removed again. Idempotent; needs root (or sudo) and apt.
set -euo pipefail
pg=15
bin=/usr/lib/postgresql/$pg/bin
control=/usr/share/postgresql/$pg/extension/vector.control
if [[ -x $bin/initdb && -x $bin/postgres && -f $control ]]; then
  exit 0
fi
sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
$sudo apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 \
  "postgresql-$pg" "postgresql-server-dev-$pg" build-essential dpkg-dev
if [[ -f $control ]]; then
  exit 0
fi
IFS=$'\t' read -r uri keyring < <("$(dirname "$0")/debian-mirror.sh")
src=/etc/apt/sources.list.d/ijepa-pgvector-src.sources
work=$(mktemp -d)
cleanup() {
  $sudo rm -f "$src"
  $sudo apt-get update -qq || true
  rm -rf "$work"
}
trap cleanup EXIT
{
  printf 'Types: deb-src\nURIs: %s\nSuites: trixie\nComponents: main\n' "$uri"
  if [[ -n $keyring ]]; then printf 'Signed-By: %s\n' "$keyring"; fi
} | $sudo tee "$src" >/dev/null
$sudo apt-get update -qq
(cd "$work" && apt-get source -qq --download-only pgvector && dpkg-source -x pgvector_*.dsc pgvector)
# No -march=native (OPTFLAGS) and no LLVM bitcode: the build runs on any x86-64 and needs no clang.
make -s -C "$work/pgvector" PG_CONFIG="$bin/pg_config" OPTFLAGS="" with_llvm=no
$sudo make -s -C "$work/pgvector" PG_CONFIG="$bin/pg_config" with_llvm=no install
test -f "$control"
echo "pgvector $(sed -n "s/^default_version = '\(.*\)'/\1/p" "$control") installed for PostgreSQL $pg"
