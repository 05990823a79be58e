#!/usr/bin/env bash
# docker build with this host's way of reaching PyPI handed to the build, without committing any of it.
#
#   scripts/docker-build-pip.sh CONTEXT_DIR [docker build options...]     e.g.  -t coord-test/chdb:abc -q
#
# Copies CONTEXT_DIR into a temporary build context and adds a directory `.host-pip/` to that copy:
#   .host-pip/ca.crt     the CA bundle the host's pip trusts (pip's `cert` setting, else SSL_CERT_FILE /
#                        REQUESTS_CA_BUNDLE, else the system bundle). On hosts whose egress re-signs TLS,
#                        pip in a container fails with CERTIFICATE_VERIFY_FAILED without it.
#   .host-pip/pip.conf   the host's effective pip settings that make sense inside a container: index-url,
#                        extra-index-url, find-links and trusted-host when they are http(s) URLs/hosts (file://
#                        and local paths are dropped: they do not exist in the container), timeout, retries,
#                        proxy, plus `cert = /tmp/host-pip/ca.crt`.
# A Dockerfile uses it in a throw-away build stage only, so neither file reaches the final image:
#   FROM coord-base/debian:bookworm AS build
#   COPY .host-pip/ /tmp/host-pip/
#   ENV PIP_CONFIG_FILE=/tmp/host-pip/pip.conf
#   RUN python3 -m venv /opt/app && /opt/app/bin/pip install ...
#   FROM coord-base/debian:bookworm
#   COPY --from=build /opt/app /opt/app
# The host's http(s)_proxy / no_proxy variables, when set, are passed as Docker's predefined proxy build args
# (which Docker keeps out of the image history). Works with the legacy builder and with BuildKit alike: the
# docker CLI on our machines has no buildx plugin, so BuildKit secrets (`RUN --mount=type=secret`) are not used.
set -euo pipefail
say() { printf 'docker-build-pip: %s\n' "$*" >&2; }

if [ $# -lt 1 ] || [ ! -d "$1" ]; then
  say "usage: $0 CONTEXT_DIR [docker build options...]"
  exit 2
fi
source_context=$1
shift

context=$(mktemp -d "${TMPDIR:-/tmp}/coord-build-context.XXXXXX")
trap 'rm -rf "$context"' EXIT
cp -a "$source_context/." "$context/"
mkdir -p "$context/.host-pip"

host_python=$(command -v python3 || true)
pip_settings=""
if [ -n "$host_python" ] && "$host_python" -m pip --version >/dev/null 2>&1; then
  # `pip config list` prints `<section>.<key>='<value>'`, files first and `:env:` (PIP_* variables) last,
  # so the last line for a key is the value pip uses.
  pip_settings=$("$host_python" -m pip config list 2>/dev/null || true)
fi

PIP_SETTINGS="$pip_settings" "${host_python:-python3}" - "$context/.host-pip" <<'PY'
import ast
import os
import shutil
import sys
from pathlib import Path

out = Path(sys.argv[1])
settings: dict[str, str] = {}
for line in os.environ.get("PIP_SETTINGS", "").splitlines():
    name, sep, raw = line.partition("=")
    if not sep:
        continue
    section, _, key = name.rpartition(".")
    if section not in ("global", "install", "download", ":env:"):
        continue
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    settings[key] = str(value)

def remote(values: str) -> list[str]:
    return [v for v in values.split() if v.startswith(("http://", "https://"))]

ca_candidates = [
    settings.get("cert"),
    os.environ.get("PIP_CERT"),
    os.environ.get("SSL_CERT_FILE"),
    os.environ.get("REQUESTS_CA_BUNDLE"),
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
]
ca = next((c for c in ca_candidates if c and Path(c).is_file()), None)
lines = ["[global]"]
if ca:
    shutil.copyfile(ca, out / "ca.crt")
    lines.append("cert = /tmp/host-pip/ca.crt")
else:
    (out / "ca.crt").write_text("")  # keeps `COPY .host-pip/` valid; pip then uses certifi's bundle
for key in ("index-url", "extra-index-url", "find-links"):
    urls = remote(settings.get(key, ""))
    if urls:
        lines.append(f"{key} = {' '.join(urls)}")
for key in ("trusted-host", "timeout", "default-timeout", "retries", "proxy"):
    if settings.get(key):
        lines.append(f"{key} = {settings[key]}")
lines.append("disable-pip-version-check = true")
(out / "pip.conf").write_text("\n".join(lines) + "\n")
print(f"docker-build-pip: CA bundle {ca or '(none found)'}; pip.conf keys: "
      f"{', '.join(line.split(' =')[0] for line in lines[1:])}", file=sys.stderr)
PY

proxy_args=()
for variable in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
  [ -z "${!variable:-}" ] || proxy_args+=(--build-arg "$variable=${!variable}")
done

docker build "${proxy_args[@]}" "$@" "$context"
