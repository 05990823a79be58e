#!/usr/bin/env bash
# The whole test suite on a fresh machine: set up (scripts/bootstrap.sh), lint, type-check src/ (mypy), then every
# test tier:
# unit (parsing, classification), integration (real tar/zstd/gpg in temp dirs), e2e (the real Docker engine),
# and then every restore test again under Debian's own /usr/bin/python3 (.venv-debian): Debian 12's 3.11.2
# lacks what later 3.11 releases added (tarfile's extraction filters, for one), and restore must work there.
# Extra arguments go to pytest, e.g. scripts/test.sh tests/unit -k policy (on .venv only; to run them on
# Debian's python3: COORD_TEST_VENV=.venv-debian scripts/test.sh tests/unit/test_restore_checks.py).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
.venv/bin/ruff check src tests $([ -d bench ] && echo bench)
.venv/bin/mypy src   # settings in pyproject.toml [tool.mypy]
RESTORE_TESTS=(
  tests/unit/test_restore_checks.py
  tests/integration/test_restore.py
  tests/e2e/test_backup_restore.py
  tests/e2e/test_restore_crash.py
)
venv=${COORD_TEST_VENV:-.venv}
if [ "$#" -gt 0 ]; then
  exec "$venv/bin/python" -m pytest "$@"
fi
# One worker per core (COORD_TEST_WORKERS overrides; 0 runs in this process). --dist loadfile keeps a module's
# tests on one worker: module-scoped fixtures (rclone servers, compose stacks) are started once.
workers=(-n "${COORD_TEST_WORKERS:-auto}" --dist loadfile)
"$venv/bin/python" -m pytest "${workers[@]}"
echo "test.sh: the restore tests again on Debian's python3 ($(.venv-debian/bin/python --version))" >&2
.venv-debian/bin/python -m pytest "${workers[@]}" "${RESTORE_TESTS[@]}"
