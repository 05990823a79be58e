"""One coord run at a time per state directory: an flock that the kernel releases when its holder dies."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from coord.errors import LockError


@contextmanager
def run_lock(state_dir: Path, timeout_s: float) -> Iterator[None]:
    """Hold <state_dir>/lock for the block; wait up to `timeout_s` for another run to finish, then LockError."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_dir / "lock"
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(descriptor, 200, 0).decode(errors="replace").strip() or "unknown"
                    raise LockError(
                        f"another coord run holds {path} ({holder}); waited {timeout_s:g}s. "
                        "Wait for it to finish or raise --lock-timeout"
                    ) from None
                time.sleep(0.2)
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%S%z')}".encode(), 0)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock
