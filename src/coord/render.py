"""Lines a human reads, built in one place so the CLI, the daemon and notifications say the same thing."""

from __future__ import annotations

from datetime import UTC, datetime


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """`1 volume`, `2 volumes`, `0 policies` (give `plural_form` where adding an s is wrong)."""
    word = singular if count == 1 else (plural_form or singular + "s")
    return f"{count:,} {word}"


def volumes_line(total: int, failed: int) -> str:
    """The run's one-line tally: `3 volumes, 1 failed`."""
    return f"{plural(total, 'volume')}, {failed} failed"


def human_size(size: float) -> str:
    """Bytes in decimal units, as `du --si` and disk vendors count: `512 B`, `1.5 MB`, `2.0 TB`."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def short_time(moment: datetime | None) -> str:
    """A moment for a table or a status line, to the second in UTC: `2026-11-27 03:00:00Z`; `never` for None."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if moment else "never"


def archived_line(size: int, verdict: str | None, downtime_s: float, archive: str | None) -> str:
    """One written archive, for the daemon's log and `coord status`: `1.5 MB, verdict consistent, downtime 0.42s
    -> /backups/v/v-....tar.zst` (no downtime part when nothing was paused or stopped)."""
    downtime = f", downtime {downtime_s:.2f}s" if downtime_s else ""
    return f"{human_size(size)}, verdict {verdict}{downtime} -> {archive}"
