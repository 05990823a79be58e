"""SIGTERM and SIGINT become an exception, so every `finally` that puts containers back runs.

While containers are being put back, a second signal must not cut that short: `deferred()` holds signals
and re-raises the first one when the critical section ends.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Interrupted(BaseException):
    """The run was asked to stop (SIGTERM from a scheduler, Ctrl-C). BaseException: no `except Exception` eats it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_state = threading.local()


def _deferring() -> list[int] | None:
    return getattr(_state, "pending", None)


def _handler(signum: int, frame: FrameType | None) -> None:
    pending = _deferring()
    if pending is not None:
        pending.append(signum)
        return
    raise Interrupted(signum)


@contextmanager
def termination_raises() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT raise Interrupted in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGTERM/SIGINT during the block (putting containers back); raise the first one afterwards."""
    outer = _deferring()
    if outer is not None:  # already deferring: the outermost block re-raises
        yield
        return
    _state.pending = []
    try:
        yield
    finally:
        pending, _state.pending = _state.pending, None
        if pending:
            raise Interrupted(pending[0])
