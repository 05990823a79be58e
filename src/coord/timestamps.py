"""The one way coord writes a moment for a machine to read: ISO 8601 in UTC with a `Z` (JSON, log lines, payloads),
and the compact UTC stamp in the names of the files it writes on targets (archives, run records)."""

from __future__ import annotations

from datetime import UTC, datetime

FILE_STAMP_FORMAT = "%Y%m%dT%H%M%SZ"  # 20261201T060000Z: sorts as time does, no character a path or rclone minds


def utc_iso(moment: datetime, timespec: str = "auto") -> str:
    """`moment` as `2026-12-01T01:39:07.123456Z` (`timespec` as datetime.isoformat takes it: "seconds",
    "milliseconds", ...). Given an aware datetime; a naive one is taken as local time, as astimezone does."""
    return moment.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def utc_iso_or_none(moment: datetime | None) -> str | None:
    """utc_iso for a moment that may be unknown: None stays None (JSON null)."""
    return utc_iso(moment) if moment is not None else None


def file_stamp(moment: datetime) -> str:
    """`moment` as the stamp in an archive's or a run record's file name: `20261201T060000Z` (UTC, seconds)."""
    return moment.astimezone(UTC).strftime(FILE_STAMP_FORMAT)
