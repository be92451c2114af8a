#!/usr/bin/env bash
# Starts Debian's dockerd (apt-get install docker.io) in the background unless a daemon already
# answers, for machines without systemd: overlay2 storage, no iptables rules and no bridge, so
# builds and containers use the host's network (`--network host`). Its pid file, log and socket's
# readiness are in ${DOCKERD_DIR:-/tmp/ijepa-dockerd}. Idempotent; needs root (or sudo).
set -euo pipefail
if docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then exit 0; fi
command -v dockerd >/dev/null || { echo "no dockerd: apt-get install docker.io" >&2; exit 1; }
sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
dir=${DOCKERD_DIR:-/tmp/ijepa-dockerd}
mkdir -p "$dir"
if [[ -f $dir/dockerd.pid ]] && $sudo kill -0 "$(cat "$dir/dockerd.pid")" 2>/dev/null; then
  echo "dockerd $(cat "$dir/dockerd.pid") is running but not answering yet" >&2
else
  # setsid: the daemon outlives this script and the shell that ran it.
  $sudo setsid dockerd --storage-driver=overlay2 --iptables=false --bridge=none \
    --pidfile="$dir/dockerd.pid" >"$dir/dockerd.log" 2>&1 </dev/null &
fi
for _ in $(seq 120); do
  if docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
    echo "dockerd $(docker version --format '{{.Server.Version}}') answering (log: $dir/dockerd.log)"
    exit 0
  fi
  sleep 0.5
done
echo "dockerd did not answer within 60 s; its log ($dir/dockerd.log) ends:" >&2
tail -n 20 "$dir/dockerd.log" >&2
exit 1
