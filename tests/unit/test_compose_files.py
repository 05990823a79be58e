"""The example compose and stack files give coord the time its SIGTERM path needs: docker stop waits
`stop_grace_period` (10 s unless set) before SIGKILL, and coord puts back every container it paused or stopped
before it exits (README, "Running coord as a compose sidecar")."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from coord.docker_ops import RESTORE_DEADLINE_S, START_TIMEOUT_S

COMPOSE = Path(__file__).resolve().parents[2] / "compose"


def seconds(duration: str) -> float:
    """A compose duration ("2m", "1m30s", "90s") in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


@pytest.mark.parametrize("name", ["docker-compose.yml", "stack.yml"])
def test_coord_gets_the_time_to_put_one_container_back_before_sigkill(name: str) -> None:
    coord = yaml.safe_load((COMPOSE / name).read_text())["services"]["coord"]
    # One container's worst case: a minute of retries, then the last attempt's own timeout.
    assert seconds(str(coord.get("stop_grace_period", "10s"))) >= RESTORE_DEADLINE_S + START_TIMEOUT_S


def test_durations_read_as_compose_writes_them() -> None:
    assert [seconds(d) for d in ("2m", "1m30s", "90s", "1h")] == [120, 90, 90, 3600]
