#!/usr/bin/env bash
# The whole test suite on a fresh machine: set up (scripts/bootstrap.sh), lint, then every test tier:
# unit (parsing, classification), integration (real tar/zstd/gpg in temp dirs), e2e (the real Docker engine).
# Extra arguments go to pytest, e.g. scripts/test.sh tests/unit -k policy
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
.venv/bin/ruff check src tests $([ -d bench ] && echo bench)
.venv/bin/python -m pytest "$@"
