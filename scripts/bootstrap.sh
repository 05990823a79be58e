#!/usr/bin/env bash
# Set up everything coord's demo and tests need on a fresh Debian/Ubuntu machine, idempotently:
# system tools (GNU tar, zstd, gpg, busybox-static, Debian's docker.io), a running Docker engine,
# the Python environment in .venv, and the offline test images. Safe to run again; fast when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'bootstrap: %s\n' "$*" >&2; }

need_packages=()
command -v tar >/dev/null || need_packages+=(tar)
command -v zstd >/dev/null || need_packages+=(zstd)
command -v pzstd >/dev/null || need_packages+=(zstd)                      # Debian's zstd ships pzstd: archives in frames
command -v pigz >/dev/null || need_packages+=(pigz)                       # gzip archives on every core
command -v gpg >/dev/null || need_packages+=(gnupg)
[ -x /bin/busybox ] || [ -x /usr/bin/busybox ] || need_packages+=(busybox-static)
command -v dockerd >/dev/null || need_packages+=(docker.io)
command -v docker-compose >/dev/null || need_packages+=(docker-compose)   # the sidecar example's tests
command -v debootstrap >/dev/null || need_packages+=(debootstrap)         # offline base image (docs/images.md)
command -v setfacl >/dev/null || need_packages+=(acl)                     # restore tests: ACLs round trip
command -v setcap >/dev/null || need_packages+=(libcap2-bin)              # restore tests: file capabilities
command -v chromium >/dev/null || need_packages+=(chromium)                # report tests: renders the HTML report
command -v restic >/dev/null || need_packages+=(restic)                    # restic targets (Debian 12: restic 0.14)
[ -x /usr/bin/python3 ] || need_packages+=(python3)                       # restore tests run on Debian's python3 too
/usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null || need_packages+=(python3-venv)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_packages+=(python3-venv)
if [ "${#need_packages[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    say "missing: ${need_packages[*]}. Install them (Debian/Ubuntu: apt-get install ${need_packages[*]}) and rerun."
    exit 1
  fi
  say "installing ${need_packages[*]} (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_packages[@]}" >/dev/null
fi

scripts/ensure-docker.sh
scripts/ensure-compose.sh

if [ ! -x .venv/bin/coord ] || [ pyproject.toml -nt .venv/.installed ]; then
  say "creating .venv and installing coord with its test tools"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
  touch .venv/.installed
fi

# The restore tests run again under Debian's own python3 (3.11.2 on Debian 12, older than the 3.11 a pyenv or
# another build brings): features that came in later point releases must not slip into coord unnoticed.
if [ ! -x .venv-debian/bin/coord ] || [ pyproject.toml -nt .venv-debian/.installed ]; then
  say "creating .venv-debian from /usr/bin/python3 ($(/usr/bin/python3 --version)) and installing coord into it"
  /usr/bin/python3 -m venv .venv-debian
  .venv-debian/bin/pip install -q --disable-pip-version-check -e '.[test]'
  touch .venv-debian/.installed
fi

scripts/build-test-images.sh
