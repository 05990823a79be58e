#!/usr/bin/env bash
# Build the coord image (compose/Dockerfile) offline: FROM the debootstrapped base image, pip through the host's
# settings (scripts/docker-build-pip.sh). Tagged coord:<digest of the sources> and coord:latest; does nothing
# when that tag exists. Prints the digest tag on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

base=$(scripts/build-debian-image.sh)
digest=$( (echo "$base"; cat compose/Dockerfile pyproject.toml README.md; find src -name '*.py' -print0 | sort -z | xargs -0 cat) | sha256sum | cut -c1-12)
image="coord:$digest"
if docker image inspect "$image" >/dev/null 2>&1; then
  docker tag "$image" coord:latest
  echo "$image"
  exit 0
fi
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/app"
cp compose/Dockerfile "$context/"
cp -r pyproject.toml README.md src "$context/app/"
find "$context/app" -name '__pycache__' -prune -exec rm -rf {} +
echo "build-coord-image: building $image from $base" >&2
scripts/docker-build-pip.sh "$context" -t "$image" --build-arg "BASE=$base" -q >/dev/null
docker tag "$image" coord:latest
echo "$image"
