"""Strategies: what happens to the containers using a volume around its archiving step.

Each strategy is a context manager. Entering it quiesces the containers (and registers their restoration at
once); leaving it, whether archiving succeeded, failed or was interrupted, restores them. This is the one place
to read to know what happens to a paused or stopped container when archiving fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from coord.errors import CoordError
from coord.policy import Strategy
from coord.results import ContainerAction


class StrategyNotAvailable(CoordError):
    """The policy names a strategy this version cannot carry out."""


@contextmanager
def quiesced(strategy: Strategy) -> Iterator[list[ContainerAction]]:
    """Hold the volume's containers in the state `strategy` needs for the duration of the block."""
    if strategy is Strategy.LIVE:
        yield []
        return
    raise StrategyNotAvailable(
        f"strategy '{strategy.value}' is not implemented yet in this version of coord; use 'live' or 'exclude'"
    )
