"""Lines a human reads, built in one place so the CLI, the daemon and notifications say the same thing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from coord.grammar import plural
from coord.results import RunResult, TargetStatus, VolumeResult, VolumeStatus

if TYPE_CHECKING:
    from coord.targets.archives import TargetListing


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


STATUS_LABEL = {"ok": "OK  ", "warning": "WARN", "failed": "FAIL", "excluded": "SKIP"}


def failed_volumes(result: RunResult) -> list[str]:
    """The failed volumes, each with the targets that failed it: `pg-data`, `pg-data: target offsite failed`."""
    named = []
    for volume in result.volumes:
        if volume.status is not VolumeStatus.FAILED:
            continue
        failed = [target.target for target in volume.targets if target.status is TargetStatus.FAILED]
        which = f"target{'s' if len(failed) > 1 else ''} {', '.join(failed)} failed" if failed else ""
        named.append(f"{volume.volume}: {which}" if which else volume.volume)
    return named


def targets_line(volume: VolumeResult) -> str | None:
    """`targets: local ok, offsite failed` when the volume has several targets or one failed (its error, naming
    the target, follows among the volume's errors); None otherwise."""
    failed = any(target.status is TargetStatus.FAILED for target in volume.targets)
    if len(volume.targets) < 2 and not failed:
        return None
    return "targets: " + ", ".join(f"{target.target} {target.status.value}" for target in volume.targets)


def run_line(run_id: int, status: str, result: RunResult) -> str:
    """A finished run in one line, for the daemon's log and notifications: `run 3 failed: 2 volumes, 1 failed
    (pg: target offsite failed); <the run's own problems>`."""
    failed = failed_volumes(result)
    return (
        f"run {run_id} {status}: {volumes_line(len(result.volumes), len(failed))}"
        + (f" ({', '.join(failed)})" if failed else "")
        + (f"; {'; '.join(result.errors)}" if result.errors else "")
    )


def run_summary(result: RunResult) -> list[str]:
    """`coord backup`'s summary: one short block per volume (status, what was written, what went wrong), then
    the run's own problems and its tally."""
    lines: list[str] = []
    for volume in result.volumes:
        head = f"{STATUS_LABEL[volume.status]} {volume.volume} (policy {volume.policy}, {volume.strategy})"
        if volume.status is VolumeStatus.EXCLUDED:
            lines.append(f"{head}: excluded by policy")
            continue
        if volume.archive:
            counts = ", ".join(f"{n} {kind}" for kind, n in volume.warnings.items() if n)
            lines.append(
                f"{head}: {volume.entries:,} entries, {human_size(volume.size)}, verdict {volume.verdict}"
                + (f", downtime {volume.downtime_s:.2f}s" if volume.containers else "")
                + (f", warnings: {counts}" if counts else "")
                + (f", {plural(volume.excluded_paths, 'path')} excluded by policy" if volume.excluded_paths else "")
            )
            lines.append(f"     -> {volume.archive}")
            if targets_line(volume):  # which targets hold it (a failed one's error follows among the errors)
                lines.append(f"     {targets_line(volume)}")
            for pruned in volume.pruned:
                lines.append(f"     pruned {pruned} (retention)")
            for reason in volume.verdict_reasons:
                lines.append(f"     {reason}")
        else:
            lines.append(head)
            if targets_line(volume):
                lines.append(f"     {targets_line(volume)}")
        for container in volume.containers:
            if container.action in ("paused", "stopped"):
                back = "back" if container.restored else "NOT BACK"
                lines.append(f"     {container.action} {container.container} for {container.seconds:.2f}s, {back}")
            if container.error:
                lines.append(f"     container {container.container}: {container.error}")
        for error in volume.errors:
            lines.append(f"     error: {error}")
        for error in volume.retention_errors:
            lines.append(f"     retention error: {error}")
        for warning in volume.retention_warnings:
            lines.append(f"     retention warning: {warning}")
    for line in result.recovered:
        lines.append(f"recovered from an earlier run: {line}")
    for error in result.errors:
        lines.append(f"error: {error}")
    for warning in result.warnings:
        lines.append(f"warning: {warning}")
    failed = sum(1 for v in result.volumes if v.status is VolumeStatus.FAILED)
    lines.append(volumes_line(len(result.volumes), failed) if result.volumes else "no volume selected")
    return lines


OUTCOME_WORDS = {"failure": "FAILED", "warning": "finished with warnings", "success": "succeeded"}


def notification_title(host: str, outcome: str, scope: str, result: RunResult | None) -> str:
    """A notification's title: `coord on db1: backup FAILED (policy pg): 2 volumes, 1 failed (pg-data)`, or
    `... 1 failed (pg-data: target offsite failed)` when a target failed it.
    `outcome` is failure, warning or success; `scope` what the notification is about (`all policies`, `policy
    pg`); `result` None when the run could not be done."""
    head = f"coord on {host}: backup {OUTCOME_WORDS[outcome]} ({scope})"
    if result is None:
        return f"{head}: the run could not be done"
    failed = failed_volumes(result)
    return f"{head}: {volumes_line(len(result.volumes), len(failed))}" + (f" ({', '.join(failed)})" if failed else "")


def notification_text(host: str, run_id: int, result: RunResult | None, error: str | None) -> str:
    """A notification's body: `coord backup`'s summary of `result` (what failed, where, and the errors that say
    what to do), then where to look further; or, when the run could not be done, why."""
    if result is None:
        lines = [
            f"backup run {run_id} could not be done: {error}",
            "Nothing was backed up by this run: fix the problem above, then run `coord backup` or wait for the "
            "next scheduled run.",
        ]
    else:
        lines = run_summary(result)
    lines.append(f"(run {run_id} on {host}; `coord status` there shows each volume's last backup)")
    return "\n".join(lines)


def listing_lines(listings: list[TargetListing], volumes: tuple[str, ...]) -> list[str]:
    """`coord list`: per target, a header line, then one line per complete archive (newest first per volume):
    start time, size, status, verdict, encrypted or not, ref. An empty target says so and what fills it."""
    lines: list[str] = []
    which = f" of {', '.join(volumes)}" if volumes else ""
    for listing in listings:
        header = f"target {listing.target} ({listing.where})"
        if listing.error is not None:
            lines.append(f"{header}: cannot be listed: {listing.error}")
            continue
        archives = listing.archives
        if not archives:
            lines.append(
                f"{header}: no complete archive{which} yet (`coord backup` puts them there; an archive counts "
                "only with its manifest)"
            )
            continue
        lines.append(f"{header}: {plural(len(archives), 'archive')}{which}")
        for item in archives:
            lines.append(
                f"  {short_time(item.started_at)}  {human_size(item.size):>9}  {item.status or '?':<7}  "
                f"{item.verdict or '-':<10}  {'encrypted' if item.encrypted else 'plain':<9}  {item.ref}"
            )
    return lines
