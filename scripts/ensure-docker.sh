#!/usr/bin/env bash
# Make a Docker engine answer on this machine: use the running one, or start Debian's dockerd (installing
# docker.io first when this is a Debian/Ubuntu machine and we are root). Says plainly what is missing otherwise.
set -euo pipefail
say() { printf 'ensure-docker: %s\n' "$*" >&2; }

if docker info >/dev/null 2>&1; then exit 0; fi

if ! command -v dockerd >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian's docker.io"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null
  else
    say "no Docker engine answers and dockerd is not installed. Install Docker (Debian: apt-get install docker.io) or point DOCKER_HOST at an engine."
    exit 1
  fi
fi
if [ "$(id -u)" != 0 ]; then
  say "dockerd is installed but not running, and only root can start it here: start it (sudo dockerd &) and rerun."
  exit 1
fi
if ! command -v docker >/dev/null; then
  say "dockerd is installed but the docker client is not on PATH"
  exit 1
fi

log=/var/log/coord-dockerd.log
say "starting dockerd in the background (log: $log)"
nohup dockerd >"$log" 2>&1 &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then say "Docker engine is up"; exit 0; fi
  sleep 1
done
say "dockerd did not come up within 60 s; last lines of $log:"
tail -n 20 "$log" >&2 || true
exit 1
