#!/usr/bin/env bash
# Build the small images the tests and the demo run, offline: no registry is reachable (or wanted).
# coord-test/busybox: a root filesystem holding Debian's static busybox and its applet links, `docker import`ed.
# The workload scripts under tests/workloads are baked in at /workloads. The tag carries a digest of this recipe, so a changed recipe builds a new image instead of reusing an old one.
set -euo pipefail
cd "$(dirname "$0")/.."

recipe_digest=$(cat "$0" tests/workloads/*.sh | sha256sum | cut -c1-12)
image="coord-test/busybox:$recipe_digest"
if docker image inspect "$image" >/dev/null 2>&1; then
  docker tag "$image" coord-test/busybox:latest
  exit 0
fi
busybox=/bin/busybox
[ -x "$busybox" ] || { echo "build-test-images: no /bin/busybox (Debian: apt-get install busybox-static)" >&2; exit 1; }

rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/etc" "$rootfs/data"
cp "$busybox" "$rootfs/bin/busybox"
for applet in $("$rootfs/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$rootfs/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"
echo 'root:x:0:' >"$rootfs/etc/group"
mkdir -p "$rootfs/workloads"
cp tests/workloads/*.sh "$rootfs/workloads/"
chmod 1777 "$rootfs/tmp"
if ! chroot "$rootfs" /bin/true 2>/dev/null; then
  echo "build-test-images: /bin/busybox does not run alone (not static?); install busybox-static" >&2
  exit 1
fi
tar -C "$rootfs" --numeric-owner -c . | docker import --change 'ENV PATH=/bin' --change 'CMD ["sh"]' - "$image" >/dev/null
docker tag "$image" coord-test/busybox:latest
echo "build-test-images: built $image" >&2
