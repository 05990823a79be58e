"""The backup run's public names, kept where callers and tests import them; the run itself is the package
`coord.backup` (read its modules in the order its `__init__` lists)."""

from __future__ import annotations

from coord.backup.context import BackupRequest, Progress
from coord.backup.publish import check_downtime, decide_status
from coord.backup.run import run_backup
from coord.encrypt import DEFAULT_STATE_DIR
from coord.plan import plan_volumes

__all__ = [
    "DEFAULT_STATE_DIR",
    "BackupRequest",
    "Progress",
    "check_downtime",
    "decide_status",
    "plan_volumes",
    "run_backup",
]
