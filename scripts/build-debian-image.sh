#!/usr/bin/env bash
# Build the base image coord-base/debian:bookworm-<digest> (also tagged coord-base/debian:bookworm) offline:
# no container registry is reachable, so the root filesystem comes from `debootstrap --variant=minbase bookworm`
# against the Debian mirror this host's apt already uses, and goes into Docker with `docker import`.
# Dockerfiles can then say `FROM coord-base/debian:bookworm`.
#
# Cached twice, both keyed by a digest of this recipe (this file + the mirror):
#   - the image: when coord-base/debian:bookworm-<digest> exists, only the moving tag is refreshed;
#   - the rootfs tarball: $COORD_IMAGE_CACHE/debian-bookworm-<digest>.tar.zst (default /var/cache/coord-images),
#     so an engine that lost the image re-imports it in seconds instead of re-running debootstrap.
#     debootstrap's downloaded .debs are kept in $COORD_IMAGE_CACHE/debootstrap-debs as well.
# Environment: COORD_DEBIAN_MIRROR overrides the mirror (default: read from apt's configuration);
#              COORD_IMAGE_CACHE overrides the cache directory; COORD_REBUILD=1 ignores both caches.
# Prints the digest-tagged image name on stdout. Needs root (debootstrap, chroot).
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf 'build-debian-image: %s\n' "$*" >&2; }

suite=bookworm
packages=python3,python3-venv,ca-certificates,tar,zstd,gnupg
repository=coord-base/debian
cache_dir=${COORD_IMAGE_CACHE:-/var/cache/coord-images}

# The mirror: whatever apt on this host fetches bookworm from (deb822 .sources or one-line .list files alike).
# Nothing host-specific is written into the repository; the mirror only enters the digest and the image.
# --no-release-info: answer from the configuration alone, also before the first `apt-get update`.
# shellcheck disable=SC2016 # $(FIELD) is apt's own format syntax, not the shell's
apt_targets=$(apt-get indextargets --no-release-info --format '$(TARGET_OF) $(RELEASE) $(REPO_URI)' 2>/dev/null || true)
mirror=${COORD_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  # The host's bookworm source; on a host of another Debian release, the mirror of its main suite (a Debian
  # mirror serves every release).
  mirror=$(awk -v s="$suite" '$1 == "deb" && $2 == s { print $3; exit }' <<<"$apt_targets")
  [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $2 !~ /-/ && $3 ~ /\/debian\/?$/ { print $3; exit }' <<<"$apt_targets")
fi
if [ -z "$mirror" ]; then
  say "found no 'deb ... $suite' source in apt's configuration (/etc/apt/sources.list, /etc/apt/sources.list.d/);"
  say "set COORD_DEBIAN_MIRROR to a Debian mirror URL"
  exit 1
fi
mirror=${mirror%/}

recipe_digest=$( { cat "$0"; echo "$mirror"; } | sha256sum | cut -c1-12)
image="$repository:$suite-$recipe_digest"
tarball="$cache_dir/debian-$suite-$recipe_digest.tar.zst"

if [ "${COORD_REBUILD:-0}" != 1 ] && docker image inspect "$image" >/dev/null 2>&1; then
  docker tag "$image" "$repository:$suite"
  echo "$image"
  exit 0
fi

import_tarball() {
  # Plain `docker import` of a tar stream: Engine 20.10 is not relied on to decompress zstd itself.
  zstd -q -d -c "$tarball" | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    --message "debootstrap --variant=minbase $suite + $packages (coord recipe $recipe_digest)" \
    - "$image" >/dev/null
  docker tag "$image" "$repository:$suite"
}

if [ "${COORD_REBUILD:-0}" != 1 ] && [ -s "$tarball" ]; then
  say "importing cached rootfs $tarball"
  import_tarball
  echo "$image"
  exit 0
fi

[ "$(id -u)" = 0 ] || { say "needs root (debootstrap and chroot)"; exit 1; }
missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v zstd >/dev/null || missing+=(zstd)
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]} (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

mkdir -p "$cache_dir/debootstrap-debs"
work=$(mktemp -d "${TMPDIR:-/tmp}/coord-debian-rootfs.XXXXXX")
rootfs="$work/rootfs"
cleanup() {
  # Never leave a bind mount behind inside a directory we are about to delete.
  for m in proc sys dev/pts dev; do mountpoint -q "$rootfs/$m" 2>/dev/null && umount -l "$rootfs/$m"; done
  rm -rf "$work"
}
trap cleanup EXIT

say "debootstrap --variant=minbase $suite from $mirror (with $packages)"
started=$SECONDS
debootstrap --variant=minbase --include="$packages" --cache-dir="$cache_dir/debootstrap-debs" \
  "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  say "debootstrap failed; last lines of its log:"; tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
say "debootstrap took $((SECONDS - started)) s"

# apt sources inside the image: the same mirror, so `RUN apt-get update && apt-get install ...` works in
# Dockerfiles built FROM this image. The security suite is added when the host's apt has one.
security=$(awk '$1 == "deb" && $2 ~ /-security$/ { print $3; exit }' <<<"$apt_targets")
{
  echo "deb $mirror $suite main"
  echo "deb $mirror $suite-updates main"
  [ -z "$security" ] || echo "deb ${security%/} $suite-security main"
} >"$rootfs/etc/apt/sources.list"

# Container hygiene: no recommends, no leftover package lists or archives, a sane resolv.conf/hostname left to
# Docker, a policy-rc.d so postinst scripts in derived images never try to start daemons.
cat >"$rootfs/etc/apt/apt.conf.d/90coord-container" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
EOF
printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
chmod 755 "$rootfs/usr/sbin/policy-rc.d"
chroot "$rootfs" python3 --version >&2
chroot "$rootfs" sh -c 'python3 -m venv /tmp/venv-check && /tmp/venv-check/bin/python -c "import ssl, sqlite3" && rm -rf /tmp/venv-check'
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log \
  "$rootfs"/var/log/apt/* "$rootfs"/tmp/* "$rootfs"/var/tmp/*
: >"$rootfs/etc/resolv.conf"
: >"$rootfs/etc/hostname"

mkdir -p "$cache_dir"
tar -C "$rootfs" --numeric-owner --xattrs -c . | zstd -q -T0 -3 -o "$tarball.partial.$$"
mv -f "$tarball.partial.$$" "$tarball"
# Older recipes' tarballs are dead weight: keep only this one.
find "$cache_dir" -maxdepth 1 -name "debian-$suite-*.tar.zst" ! -name "${tarball##*/}" -delete
import_tarball
say "built $image ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}')), rootfs cached at $tarball"
echo "$image"
