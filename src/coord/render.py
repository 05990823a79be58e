"""Lines a human reads, built in one place so the CLI, the daemon and notifications say the same thing."""

from __future__ import annotations


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """`1 volume`, `2 volumes`, `0 policies` (give `plural_form` where adding an s is wrong)."""
    word = singular if count == 1 else (plural_form or singular + "s")
    return f"{count:,} {word}"


def volumes_line(total: int, failed: int) -> str:
    """The run's one-line tally: `3 volumes, 1 failed`."""
    return f"{plural(total, 'volume')}, {failed} failed"
