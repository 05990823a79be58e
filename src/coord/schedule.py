"""When the daemon runs backups: a cron expression (croniter parses it), an optional random jitter, a time zone.

Five fields are classic cron (minute hour day-of-month month day-of-week, also `@daily` and friends); six
fields put seconds first (`*/30 * * * * *`), as Quartz, Spring and Go's cron libraries do. Times are in the
machine's time zone (`TZ`, else /etc/localtime, else UTC), like cron's. Jitter delays each run by a random
0..jitter seconds after its fire time, so many hosts on the same schedule do not hit one server at once.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from coord.errors import UsageError

MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
MAX_JITTER_S = 24 * 3600


def local_zone() -> tzinfo:
    """The zone cron would use: $TZ, else /etc/localtime, else UTC."""
    name = os.environ.get("TZ", "").lstrip(":")
    try:
        if name:
            return ZoneInfo(name)
        localtime = Path("/etc/localtime")
        target = os.path.realpath(localtime)
        if "/zoneinfo/" in target:  # a link into the zone database names the zone, e.g. Europe/Berlin
            return ZoneInfo(target.split("/zoneinfo/", 1)[1])
        if localtime.exists():
            with open(localtime, "rb") as handle:
                return ZoneInfo.from_file(handle, key="localtime")
    except (ZoneInfoNotFoundError, ValueError, OSError):
        pass
    return UTC


@dataclass(frozen=True)
class Schedule:
    """A validated cron expression with its jitter. Build it with `parse_schedule`."""

    expression: str
    jitter_s: float = 0.0
    zone: tzinfo = UTC

    @property
    def has_seconds(self) -> bool:
        return len(self.expression.split()) == 6

    def next_after(self, moment: datetime) -> datetime:
        """The first fire time strictly after `moment` (an aware datetime), without jitter, in this zone."""
        start = moment.astimezone(self.zone)
        return croniter(self.expression, start, second_at_beginning=self.has_seconds).get_next(datetime)

    def previous_before(self, moment: datetime) -> datetime:
        """The last fire time at or before `moment`, without jitter."""
        start = moment.astimezone(self.zone) + timedelta(microseconds=1)
        return croniter(self.expression, start, second_at_beginning=self.has_seconds).get_prev(datetime)

    def delay(self, rng: random.Random | None = None) -> float:
        """A random delay in [0, jitter_s] seconds for one run."""
        return (rng or random).uniform(0.0, self.jitter_s) if self.jitter_s > 0 else 0.0

    def describe(self) -> str:
        jitter = f", jitter up to {self.jitter_s:g}s" if self.jitter_s else ""
        return f"'{self.expression}' ({getattr(self.zone, 'key', None) or self.zone}{jitter})"


def parse_schedule(expression: str, jitter_s: float = 0.0, zone: tzinfo | None = None) -> Schedule:
    """Validate a cron expression (5 fields, or 6 with seconds first, or an @macro) and a jitter.

    Raises UsageError with what is wrong and what is allowed.
    """
    text = " ".join(expression.split())
    fields = text.split(" ") if text else []
    if not (len(fields) in (5, 6) or (len(fields) == 1 and text.lower() in MACROS)):
        raise UsageError(
            f"schedule '{expression}': expected 5 cron fields (minute hour day month weekday), 6 with seconds "
            f"first (second minute hour day month weekday), or one of {', '.join(MACROS)}; got {len(fields)} field(s)"
        )
    try:
        croniter(text, datetime.now(UTC), second_at_beginning=len(fields) == 6).get_next(datetime)
    except (CroniterError, ValueError, KeyError) as error:
        raise UsageError(f"schedule '{expression}': {error}") from None
    if not 0 <= jitter_s <= MAX_JITTER_S:
        raise UsageError(f"jitter {jitter_s:g}s: must be between 0 and {MAX_JITTER_S} seconds (24 hours)")
    return Schedule(text, float(jitter_s), zone if zone is not None else local_zone())
