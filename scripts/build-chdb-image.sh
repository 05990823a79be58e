#!/usr/bin/env bash
# Build coord-test/chdb:<digest> (also tagged coord-test/chdb:latest): a real ClickHouse engine (chdb, in-process
# ClickHouse from PyPI) on the coord-base/debian:bookworm image, with tests/workloads/chdb_*.py baked in at
# /workloads. The tag digests the recipe: this script, the pip build helper, the Dockerfile, the pinned
# requirements, the workload scripts and the base image's own digest tag, so any change builds a new image and an
# unchanged recipe is a no-op. Builds the base image first when needed (scripts/build-debian-image.sh).
# Prints the digest-tagged image name on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf 'build-chdb-image: %s\n' "$*" >&2; }

repository=coord-test/chdb
recipe_dir=tests/images/chdb
base=$(scripts/build-debian-image.sh)

recipe_digest=$( { cat "$0" scripts/docker-build-pip.sh "$recipe_dir/Dockerfile" "$recipe_dir/requirements.txt" \
  tests/workloads/chdb_*.py; echo "$base"; } | sha256sum | cut -c1-12)
image="$repository:$recipe_digest"
if docker image inspect "$image" >/dev/null 2>&1; then
  docker tag "$image" "$repository:latest"
  echo "$image"
  exit 0
fi

stage=$(mktemp -d "${TMPDIR:-/tmp}/coord-chdb-recipe.XXXXXX")
trap 'rm -rf "$stage"' EXIT
cp "$recipe_dir/Dockerfile" "$recipe_dir/requirements.txt" "$stage/"
mkdir "$stage/workloads"
cp tests/workloads/chdb_*.py "$stage/workloads/"

say "building $image FROM $base"
started=$SECONDS
# --force-rm: intermediate containers go even when a step fails (the engine is shared with other engineers).
if ! scripts/docker-build-pip.sh "$stage" --force-rm --build-arg "BASE=$base" -t "$image" >"$stage/build.log" 2>&1; then
  say "docker build failed; last lines:"
  tail -n 40 "$stage/build.log" >&2
  exit 1
fi
docker tag "$image" "$repository:latest"
say "built $image in $((SECONDS - started)) s ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
echo "$image"
