"""Anomaly rules: an archive that suddenly holds much less than the last good one, or none of what the policy
says a volume must hold.

The incident behind them: an exclude pattern matched every ClickHouse part directory, and from then on each
nightly archive held only metadata, while every run "succeeded". Two rules, decided in the publish step
(backup/publish.py) before the manifest records the status:

- drop: the archive's size or entry count fell by more than the policy's `anomaly.max_drop` (default 0.5, i.e.
  50%) from the last successful archive (ok or warning) of the same volume, as the history recorded it: the
  volume becomes `warning`, the figures in its errors. Nothing to compare with (a first backup, an empty history)
  means no finding.
- expect: a pattern of the policy's `expect:` that no archived entry matches: the volume fails and its archive
  is not kept. The patterns use the exclude language (excludes.py); an entry matches when the pattern would
  exclude it, so `store/*/*/*_*_*_*` counts each ClickHouse part directory and every file in it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from coord.consistency import ArchivedTree
from coord.excludes import ExcludeMatcher
from coord.render import human_size, short_time


def count_expected(tree: ArchivedTree, patterns: Sequence[str]) -> dict[str, int]:
    """For each pattern, how many archived entries it matches (an entry below a matching directory matches too).

    Given the tree tar archived, once tar is done (it reads the spooled listing again). Returns a count per
    pattern, in the patterns' order.
    """
    matchers = {pattern: ExcludeMatcher.of([pattern]) for pattern in patterns}
    counts = dict.fromkeys(patterns, 0)
    for directory, names in tree.directories():
        for pattern, matcher in matchers.items():
            if directory != "." and matcher.excludes(directory):
                counts[pattern] += len(names)  # the directory itself was counted with its parent's names
            else:
                prefix = "" if directory == "." else f"{directory}/"
                counts[pattern] += sum(1 for name in names if matcher.excludes(prefix + name))
    return counts


def missing_expected(counts: dict[str, int]) -> list[str]:
    """An error for each `expect:` pattern that matched no archived entry (the volume fails)."""
    return [
        f"expect: no archived entry matches '{pattern}' (the policy says the volume must hold such entries): "
        "the archive was not kept; check the policy's exclude patterns and what the volume holds"
        for pattern, count in counts.items()
        if count == 0
    ]


@dataclass(frozen=True)
class Baseline:
    """The last successful archive of a volume, as the history recorded it."""

    run_id: int
    started_at: datetime
    size: int
    entries: int | None  # None: recorded before the history kept entry counts


def _fall(before: int, now: int) -> float:
    return (before - now) / before if before > 0 else 0.0


def _percent(fraction: float) -> str:
    """A fall in whole percent, rounded down: 99.96% is 99%, so 100% means nothing is left."""
    return f"{math.floor(fraction * 100)}%"


def drop_warning(size: int, entries: int, baseline: Baseline | None, max_drop: float) -> str | None:
    """The warning, in words and figures, when `size` or `entries` fell by more than `max_drop` (a fraction) from
    `baseline`; None when neither did or there is nothing to compare with."""
    if baseline is None:
        return None
    findings = []
    size_fall = _fall(baseline.size, size)
    if size_fall > max_drop:
        findings.append(f"size fell by {_percent(size_fall)} ({human_size(baseline.size)} -> {human_size(size)})")
    if baseline.entries is not None:
        entries_fall = _fall(baseline.entries, entries)
        if entries_fall > max_drop:
            findings.append(f"entries fell by {_percent(entries_fall)} ({baseline.entries:,} -> {entries:,})")
    if not findings:
        return None
    return (
        f"anomaly: {' and '.join(findings)} since the last successful backup (run {baseline.run_id}, "
        f"{short_time(baseline.started_at)}), more than anomaly.max_drop {max_drop:.0%}: check the policy's "
        "exclude patterns and what the volume holds"
    )
