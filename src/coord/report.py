"""Reports over the run history: pure functions from rows to summaries, and their text and JSON renderings.

Definitions (README, "Run history and reports"): a volume's *runs* are its outcomes other than `excluded`;
*successes* are `ok` plus `warning` (the backup was written; exit 0), *warnings* the `warning` ones among them,
*failures* the `failed` ones; the success rate is successes / runs. Downtime statistics cover every run, failed
ones too (a failed pause still froze the containers). *Last success* looks at all history before the end of the
period, not only the period. Weeks are ISO 8601 weeks (Monday to Sunday) in UTC.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from coord.errors import UsageError
from coord.history import CRASHED, FAILED, INTERRUPTED, OK, RUNNING, DrillRow, History, RunRow, VolumeRow
from coord.render import STATUS_LABEL, archived_line, short_time
from coord.timestamps import utc_iso_or_none

SUCCESS_STATUSES = ("ok", "warning")
TARGET_STATUSES = ("ok", "failed", "skipped")  # results.TargetStatus
WEEK = re.compile(r"^(\d{4})-?W(\d{1,2})$", re.IGNORECASE)


@dataclass(frozen=True)
class Period:
    """[start, end) in UTC, with how the operator asked for it."""

    start: datetime
    end: datetime
    label: str

    def to_json(self) -> dict[str, str | None]:
        return {"from": utc_iso_or_none(self.start), "to": utc_iso_or_none(self.end), "label": self.label}


def week_of(moment: datetime) -> Period:
    """The ISO week (UTC) that contains `moment`."""
    year, week, _ = moment.astimezone(UTC).isocalendar()
    return _week(year, week)


def parse_week(text: str) -> Period:
    """'2026-W48' (or '2026W48') -> that ISO week. Raises UsageError."""
    match = WEEK.match(text.strip())
    if not match:
        raise UsageError(f"--week '{text}': expected an ISO week like 2026-W48")
    year, week = int(match[1]), int(match[2])
    try:
        return _week(year, week)
    except ValueError:
        raise UsageError(f"--week '{text}': {year} has no ISO week {week}") from None


def parse_since(text: str, now: datetime) -> Period:
    """'2026-11-01' (midnight UTC) or an ISO date-time -> [then, now). Raises UsageError."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"--since '{text}': expected a date like 2026-11-01 or a date-time") from None
    start = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    if start > now:
        raise UsageError(f"--since '{text}' is in the future")
    return Period(start, now, f"since {text.strip()}")


def _week(year: int, week: int) -> Period:
    monday = date.fromisocalendar(year, week, 1)
    start = datetime.combine(monday, time(), UTC)
    return Period(start, start + timedelta(days=7), f"{year}-W{week:02d}")


@dataclass
class VolumeSummary:
    policy: str
    volume: str
    runs: int = 0
    successes: int = 0
    warnings: int = 0
    failures: int = 0
    excluded: int = 0
    downtime_total_s: float = 0.0
    downtime_max_s: float = 0.0
    last_success: datetime | None = None
    last_status: str | None = None
    last_error: str | None = None
    gone: str | None = None  # why this volume is no longer backed up (see gone_reasons), None while it is
    last_drill: DrillRow | None = None  # the volume's latest restore drill (drill.py), whenever it was
    targets: dict[str, dict[str, int]] = field(default_factory=dict)  # target -> status (ok, failed, skipped) -> runs

    @property
    def success_rate(self) -> float | None:
        return self.successes / self.runs if self.runs else None

    @property
    def downtime_mean_s(self) -> float | None:
        return self.downtime_total_s / self.runs if self.runs else None

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "volume": self.volume,
            "runs": self.runs,
            "successes": self.successes,
            "warnings": self.warnings,
            "failures": self.failures,
            "excluded": self.excluded,
            "success_rate": None if self.success_rate is None else round(self.success_rate, 4),
            "downtime_mean_s": None if self.downtime_mean_s is None else round(self.downtime_mean_s, 3),
            "downtime_max_s": round(self.downtime_max_s, 3),
            "last_success": utc_iso_or_none(self.last_success),
            "last_status": self.last_status,
            "last_error": self.last_error,
            "gone": self.gone,
            "last_drill": self.last_drill.to_json() if self.last_drill else None,
            "targets": {target: dict(counts) for target, counts in sorted(self.targets.items())},
        }


@dataclass
class RunCounts:
    total: int = 0
    by_status: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys((OK, FAILED, INTERRUPTED, CRASHED, RUNNING), 0)
    )

    def to_json(self) -> dict[str, int]:
        return {"total": self.total, **self.by_status}


@dataclass
class Report:
    period: Period
    runs: RunCounts
    volumes: list[VolumeSummary]

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": True,
            "period": self.period.to_json(),
            "runs": self.runs.to_json(),
            "volumes": [v.to_json() for v in self.volumes],
        }


def build_report(
    period: Period,
    run_statuses: Iterable[str],
    volume_rows: Iterable[VolumeRow],
    last_successes: dict[tuple[str, str], datetime],
    gone: dict[tuple[str, str], str] | None = None,
) -> Report:
    """Aggregate one period.

    `run_statuses` are the effective statuses of the runs that started in the period (crashed ones included),
    `volume_rows` the volume outcomes of that period, `last_successes` each (policy, volume)'s latest success
    before the period's end (from all history).
    """
    counts = RunCounts()
    for status in run_statuses:
        counts.total += 1
        counts.by_status[status] = counts.by_status.get(status, 0) + 1
    summaries: dict[tuple[str, str], VolumeSummary] = {}
    for row in sorted(volume_rows, key=lambda r: (r.started_at, r.run_id)):
        if not period.start <= row.started_at < period.end:
            continue
        summary = summaries.setdefault((row.policy, row.volume), VolumeSummary(row.policy, row.volume))
        summary.last_status, summary.last_error = row.status, row.error
        if row.status == "excluded":
            summary.excluded += 1
            continue
        summary.runs += 1
        summary.successes += row.status in SUCCESS_STATUSES
        summary.warnings += row.status == "warning"
        summary.failures += row.status == "failed"
        summary.downtime_total_s += row.downtime_s
        summary.downtime_max_s = max(summary.downtime_max_s, row.downtime_s)
        for item in row.targets:
            tally = summary.targets.setdefault(str(item.get("target")), dict.fromkeys(TARGET_STATUSES, 0))
            status = str(item.get("status"))
            tally[status] = tally.get(status, 0) + 1
    for key, summary in summaries.items():
        summary.last_success = last_successes.get(key)
        summary.gone = (gone or {}).get(key)
    return Report(period, counts, [summaries[key] for key in sorted(summaries)])


# ---------------------------------------------------------------------------------------------------------------
# Rendering


def render_report(report: Report) -> list[str]:
    """The report as text lines: a header with the run counts, then one row per policy and volume."""
    period = report.period
    counts = ", ".join(f"{n} {status}" for status, n in report.runs.by_status.items() if n)
    lines = [
        f"coord report {period.label} ({short_time(period.start)} .. {short_time(period.end)}): "
        f"{report.runs.total} run(s)" + (f": {counts}" if counts else "")
    ]
    if not report.volumes:
        lines.append("no volume outcomes recorded in this period")
        return lines
    header = (
        "policy", "volume", "runs", "ok", "warn", "fail", "rate", "downtime mean", "max", "last success", "last drill"
    )  # fmt: skip
    rows = [header] + [
        (
            v.policy,
            v.volume,
            str(v.runs),
            str(v.successes - v.warnings),
            str(v.warnings),
            str(v.failures),
            "-" if v.success_rate is None else f"{v.success_rate:.0%}",
            "-" if v.downtime_mean_s is None else f"{v.downtime_mean_s:.2f}s",
            f"{v.downtime_max_s:.2f}s",
            short_time(v.last_success) + (f" ({v.excluded} excluded)" if v.excluded else ""),
            drill_cell(v.last_drill),
        )
        for v in report.volumes
    ]
    lines += _table(rows, right_aligned=range(2, 9))
    lines += [f"gone: {v.volume} (policy {v.policy}): {v.gone}" for v in report.volumes if v.gone]
    return lines + [line for v in report.volumes for line in target_failure_lines(v)]


def target_failure_lines(summary: VolumeSummary) -> list[str]:
    """`targets: pg-data (policy pg): offsite failed in 2 of 7 runs` for each target that failed the volume in the
    period (a target that always took the archive says nothing)."""
    lines = []
    for target, counts in sorted(summary.targets.items()):
        failed = counts.get("failed", 0)
        if failed:
            lines.append(
                f"targets: {summary.volume} (policy {summary.policy}): {target} failed in {failed} of "
                f"{sum(counts.values())} runs"
            )
    return lines


def drill_cell(drill: DrillRow | None) -> str:
    """A volume's last drill in a table cell: `ok 2026-11-30 04:00:00Z`, `FAIL 2026-... (offsite)` (the target
    that failed it), or `never`."""
    if drill is None:
        return "never"
    if drill.status == "ok":
        return f"ok {short_time(drill.started_at)}"
    return f"FAIL {short_time(drill.started_at)}" + (f" ({drill.target})" if drill.target else "")


def _table(rows: Sequence[Sequence[str]], right_aligned: Iterable[int]) -> list[str]:
    right = set(right_aligned)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
        for row in rows
    ]


def _targets_part(row: VolumeRow) -> str:
    """`; targets local ok, offsite failed` when the row went to several targets or one did not take it."""
    outcomes = [(str(item.get("target")), str(item.get("status"))) for item in row.targets]
    if len(outcomes) < 2 and all(status == "ok" for _, status in outcomes):
        return ""
    return "; targets " + ", ".join(f"{target} {status}" for target, status in outcomes)


def render_status(
    latest: RunRow | None,
    latest_status: str | None,
    volumes: Sequence[VolumeRow],
    gone: dict[tuple[str, str], str] | None = None,
) -> list[str]:
    """`coord status`: one line per volume (its last outcome), then one line for the latest run when it did not
    end well or is still going (running, crashed, interrupted, or failed before any volume). A volume no longer
    backed up (`gone`, see gone_reasons) is marked so, not shown with its stale outcome."""
    lines = []
    for row in volumes:
        head = f"{STATUS_LABEL.get(row.status, row.status.upper())} {row.volume} (policy {row.policy}, {row.strategy})"
        when = f"{short_time(row.started_at)} run {row.run_id}"
        retired = (gone or {}).get((row.policy, row.volume))
        if retired:
            lines.append(f"GONE {row.volume} (policy {row.policy}) last {row.status} {when}: {retired}")
        elif row.status == "excluded":
            lines.append(f"{head} {when}: excluded by policy")
        elif row.status == "failed":
            lines.append(f"{head} {when}: {row.error or 'failed'}{_targets_part(row)}")
        else:
            archived = archived_line(row.size, row.verdict, row.downtime_s, row.archive)
            lines.append(f"{head} {when}: {archived}{_targets_part(row)}")
    if latest is None:
        return ["no backup run recorded yet"]
    shown = {row.run_id for row in volumes}
    if latest_status != OK and (latest_status in (RUNNING, CRASHED, INTERRUPTED) or latest.id not in shown):
        problem = "; ".join(latest.errors)
        lines.append(
            f"last run {latest.id} ({latest.trigger}, pid {latest.pid}) started {short_time(latest.started_at)}: "
            f"{latest_status}" + (f": {problem}" if problem else "")
        )
    return lines


# ---------------------------------------------------------------------------------------------------------------
# Reading the history (the only functions here that do)


def gone_reasons(
    latest: Sequence[VolumeRow],
    later_rows: Sequence[VolumeRow],
    completed_runs: Iterable[int],
    policies: Iterable[str] | None,
) -> dict[tuple[str, str], str]:
    """Which (policy, volume) pairs are no longer backed up, and why, for volumes' `latest` outcomes.

    Gone: the policy no longer exists (when `policies`, the current policy names, are known), or a later
    completed run ran the policy (it has an outcome for another of its volumes) without this volume: the volume
    was removed, or the policy no longer selects it. `later_rows` are the volume outcomes since the oldest of
    `latest`; `completed_runs` the ids of the runs among them that ended ok or failed (not interrupted).
    """
    current = None if policies is None else set(policies)
    completed = set(completed_runs)
    ran: dict[int, set[tuple[str, str]]] = {}
    for row in later_rows:
        if row.run_id in completed:
            ran.setdefault(row.run_id, set()).add((row.policy, row.volume))
    reasons: dict[tuple[str, str], str] = {}
    for row in latest:
        key = (row.policy, row.volume)
        if current is not None and row.policy not in current:
            reasons[key] = f"policy {row.policy} no longer exists"
            continue
        later = sorted(run for run, seen in ran.items() if run > row.run_id and key not in seen)
        for run in later:
            if any(policy == row.policy for policy, _ in ran[run]):
                reasons[key] = (
                    f"run {run} ran policy {row.policy} without it: the volume was removed or the policy no "
                    "longer selects it"
                )
                break
    return reasons


def _gone_in(
    history: History, latest: Sequence[VolumeRow], policies: Iterable[str] | None
) -> dict[tuple[str, str], str]:
    if not latest:
        return {}
    since = min(row.started_at for row in latest)
    completed = [run.id for run in history.runs(since) if run.status in (OK, FAILED)]
    return gone_reasons(latest, history.volume_runs(since), completed, policies)


def report_for(history: History, period: Period, policies: Iterable[str] | None = None) -> Report:
    """The report of `period` from the history database; volumes no longer backed up are marked (`policies`:
    the current policy names, when known)."""
    here = socket.gethostname()
    rows = history.volume_runs(period.start, period.end)
    latest = {(row.policy, row.volume): row for row in rows}  # oldest first: the last one wins
    report = build_report(
        period,
        [run.effective_status(here) for run in history.runs(period.start, period.end)],
        rows,
        history.last_successes(period.end),
        _gone_in(history, list(latest.values()), policies),
    )
    drills = history.last_drills()
    for summary in report.volumes:
        summary.last_drill = drills.get(summary.volume)
    return report


def status_of(history: History, policies: Iterable[str] | None = None) -> dict[str, Any]:
    """`coord status` as data: each volume's last outcome, the latest run with its effective status, and which
    volumes are no longer backed up (`policies`: the current policy names, when known)."""
    latest = history.latest_run()
    status = latest.effective_status() if latest else None
    volumes = history.latest_per_volume()
    return {
        "ok": True,
        "volumes": volumes,
        "last_run": latest,
        "last_run_status": status,
        "gone": _gone_in(history, volumes, policies),
    }
