"""Counting in words, for messages anywhere in coord (render.py builds whole lines; this has no dependencies, so
the modules render.py reads from can use it too)."""

from __future__ import annotations


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """`1 volume`, `2 volumes`, `0 policies` (give `plural_form` where adding an s is wrong)."""
    word = singular if count == 1 else (plural_form or singular + "s")
    return f"{count:,} {word}"
