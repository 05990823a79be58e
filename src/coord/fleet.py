"""The fleet report (`coord report --fleet`): every node's runs and archives on the shared targets, per node,
service and volume.

Two sources, both on the targets:
- the run records (run_records.py, `_runs/<node>/`): every run of every node, failed ones too, with each
  volume's outcome. They give the runs, ok / warning / failed, the success rate ((ok + warning) / runs, as
  `coord report` computes it), the last failure and its message, verdicts and downtime (mean over every run,
  failed ones too), and per node the last record seen: a node with no record in the period but one before is
  *silent* (its coord died, or it cannot reach any target). Records are listed by name (the name carries the
  run's start); only those of the period are read. A record found on several targets counts once.
- the manifests of the complete archives (each names the node that wrote it: `node`, else its `host`): the
  archives published in the period and their status. An archive found on several targets is counted once.
  For a node that published no record (a coord from before run records), verdicts and downtime come from them.

Exit status: 1 when a target, a record or a manifest could not be read; the runs' failures do not change it (a
report describes, as `coord report` does; alerts come from each node's metrics and notifications).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from coord.errors import CoordError
from coord.history import RUN_WARNING, VolumeRow
from coord.render import short_time
from coord.report import SUCCESS_STATUSES, Period, _table
from coord.run_records import ReadRecord, RecordShelf, read_record, shelf_of, stamp_of
from coord.targets.archives import ArchiveStore
from coord.timestamps import utc_iso_or_none

log = logging.getLogger("coord.fleet")


@dataclass
class FleetRow:
    """One node's runs and archives of one volume in the period."""

    node: str
    volume: str
    services: set[str] = field(default_factory=set)  # Swarm services (and containers) quiesced: the records'
    archive_services: set[str] = field(default_factory=set)  # the containers the manifests name
    policies: set[str] = field(default_factory=set)
    statuses: Counter[str] = field(default_factory=Counter)  # archives published, by status (manifests)
    verdicts: Counter[str] = field(default_factory=Counter)  # of the archives (manifests)
    downtimes: list[float] = field(default_factory=list)  # of the archives (manifests)
    last_success: datetime | None = None
    targets: set[str] = field(default_factory=set)
    runs: list[VolumeRow] = field(default_factory=list)  # the volume's outcomes in the run records, oldest first

    @property
    def archives(self) -> int:
        return sum(self.statuses.values())

    @property
    def counted(self) -> list[VolumeRow]:
        """The runs that count (an `excluded` outcome is a decision, not a run: as `coord report`)."""
        return [row for row in self.runs if row.status != "excluded"]

    def run_count(self, *statuses: str) -> int:
        return sum(1 for row in self.counted if not statuses or row.status in statuses)

    @property
    def service_names(self) -> list[str]:
        """The services quiesced, from the records; from the manifests when the node published none."""
        return sorted(self.services if self.runs else self.archive_services)

    @property
    def success_rate(self) -> float | None:
        runs = self.run_count()
        return self.run_count(*SUCCESS_STATUSES) / runs if runs else None

    @property
    def last_failure(self) -> VolumeRow | None:
        failed = [row for row in self.counted if row.status == "failed"]
        return failed[-1] if failed else None

    @property
    def last_run_success(self) -> datetime | None:
        """The latest success: of the run records, or of the verified archives (whichever is later)."""
        moments = [row.started_at for row in self.counted if row.status in SUCCESS_STATUSES]
        moments += [self.last_success] if self.last_success else []
        return max(moments, default=None)

    @property
    def run_verdicts(self) -> Counter[str]:
        """Verdicts of the runs (the records); of the archives when the node published no record."""
        if not self.counted:
            return self.verdicts
        return Counter(str(row.verdict or "none") for row in self.counted)

    @property
    def run_downtimes(self) -> list[float]:
        """Downtime of every run, failed ones too (the records); of the archives when there is no record."""
        return [row.downtime_s for row in self.counted] if self.counted else self.downtimes

    def to_json(self) -> dict[str, Any]:
        downtimes, failure, rate = self.run_downtimes, self.last_failure, self.success_rate
        return {
            "node": self.node,
            "volume": self.volume,
            "policies": sorted(self.policies),
            "services": self.service_names,
            "runs": self.run_count(),
            "ok": self.run_count("ok"),
            "warnings": self.run_count("warning"),
            "failures": self.run_count("failed"),
            "success_rate": None if rate is None else round(rate, 4),
            "last_success": utc_iso_or_none(self.last_run_success),
            "last_failure": None
            if failure is None
            else {"started_at": utc_iso_or_none(failure.started_at), "run": failure.run_id, "error": failure.error},
            "verdicts": dict(self.run_verdicts),
            "downtime_mean_s": round(sum(downtimes) / len(downtimes), 3) if downtimes else None,
            "downtime_max_s": round(max(downtimes), 3) if downtimes else None,
            "archives": self.archives,
            "statuses": dict(self.statuses),
            "targets": sorted(self.targets),
        }


@dataclass
class FleetNode:
    """One node: its runs in the period (from its records), and the last record it published at all."""

    node: str
    runs: Counter[str] = field(default_factory=Counter)  # run status (ok, failed, interrupted) -> runs
    last_seen: datetime | None = None  # the start of its latest run record before the period's end
    run_errors: list[tuple[datetime, str]] = field(default_factory=list)  # run-level problems of failed runs

    @property
    def silent(self) -> bool:
        """It published records before the period and none in it."""
        return self.last_seen is not None and not self.runs

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "runs": sum(self.runs.values()),
            "run_statuses": dict(self.runs),
            "last_seen": utc_iso_or_none(self.last_seen),
            "silent": self.silent,
            "run_errors": [{"started_at": utc_iso_or_none(at), "error": error} for at, error in self.run_errors],
        }


@dataclass
class FleetReport:
    period: Period
    rows: list[FleetRow]
    errors: list[str]  # targets, records or manifests that could not be read
    nodes: list[FleetNode] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the report cannot see (a restic target's runs)

    def to_json(self) -> dict[str, Any]:
        return {
            "period": self.period.to_json(),
            "nodes": sorted({row.node for row in self.rows} | {node.node for node in self.nodes}),
            "node_runs": [node.to_json() for node in self.nodes],
            "silent": [node.node for node in self.nodes if node.silent],
            "rows": [row.to_json() for row in self.rows],
            "errors": self.errors,
            "notes": self.notes,
        }


def node_of(manifest: dict[str, Any]) -> str:
    return str(manifest.get("node") or manifest.get("host") or "?")


def fleet_report(stores: Sequence[ArchiveStore], period: Period, now: datetime) -> FleetReport:
    """Read every complete archive's manifest on `stores` started in `period`; one row per node and volume.
    A target or manifest that cannot be read is reported in `errors`, the others are read anyway."""
    rows: dict[tuple[str, str], FleetRow] = {}
    seen: set[tuple[str, str, str]] = set()
    errors: list[str] = []
    for target in stores:
        try:  # every node's namespace (`_nodes/<node>/`) and the flat layout (single hosts, older archives)
            namespaces = [target.in_namespace(None), *(target.in_namespace(node) for node in target.nodes())]
            volumes = [(store, volume) for store in namespaces for volume in store.volumes()]
        except CoordError as error:
            errors.append(f"target {target.name}: {error.message}")
            continue
        for store, volume in volumes:
            try:
                listing = store.list_volume(volume, now)
                errors += listing.warnings
                for archive in listing.archives:
                    if not period.start <= archive.started_at < period.end:
                        continue
                    manifest = store.location(archive.ref).read_manifest()
                    node = node_of(manifest)
                    row = rows.setdefault((node, volume), FleetRow(node, volume))
                    row.targets.add(store.name)
                    if (node, volume, archive.ref.file) in seen:
                        continue
                    seen.add((node, volume, archive.ref.file))
                    _count(row, manifest, archive.started_at, archive.verified)
            except (CoordError, ValueError, OSError) as error:
                errors.append(f"target {store.name}, volume {volume}: {getattr(error, 'message', error)}")
    nodes: dict[str, FleetNode] = {}
    notes = read_records(stores, period, rows, nodes, errors)
    return FleetReport(
        period,
        sorted(rows.values(), key=lambda row: (row.node, row.volume)),
        errors,
        [nodes[name] for name in sorted(nodes)],
        notes,
    )


def read_records(
    stores: Sequence[ArchiveStore],
    period: Period,
    rows: dict[tuple[str, str], FleetRow],
    nodes: dict[str, FleetNode],
    errors: list[str],
) -> list[str]:
    """Read the run records on `stores` into `rows` (per node and volume) and `nodes`: every record's name (for
    the node's last record seen), the content of those of `period` only. What cannot be read goes to `errors`.
    Returns the notes: targets that carry no records."""
    notes = []
    records: dict[tuple[str, str], tuple[RecordShelf, datetime]] = {}
    for store in stores:
        shelf = shelf_of(store)
        if shelf is None:
            notes.append(
                f"target {store.name} is a restic repository: it carries no run records, so its archives are "
                "counted but not its runs"
            )
            continue
        try:
            for node in shelf.nodes():
                for name in shelf.names(node):
                    started = stamp_of(name)
                    if started is None or started >= period.end:  # a node seen only after the period is not in it
                        continue
                    summary = nodes.setdefault(node, FleetNode(node))
                    if summary.last_seen is None or started > summary.last_seen:
                        summary.last_seen = started
                    if period.start <= started:
                        records.setdefault((node, name), (shelf, started))
        except (CoordError, OSError) as error:
            errors.append(f"target {store.name}: run records: {getattr(error, 'message', error)}")
    for (node, name), (shelf, _) in sorted(records.items(), key=lambda item: (item[1][1], item[0])):
        try:
            record = read_record(shelf.read(node, name))
        except (CoordError, OSError, ValueError, KeyError, TypeError) as error:
            where = shelf.where(node, name)
            errors.append(f"target {shelf.target}: run record {where}: {getattr(error, 'message', error)}")
            continue
        count_record(nodes[node], rows, record)
    return notes


def count_record(node: FleetNode, rows: dict[tuple[str, str], FleetRow], record: ReadRecord) -> None:
    """Add one run record to its node and to its volumes' rows."""
    node.runs[record.status] += 1
    problems = [error for error in record.errors if not error.startswith(RUN_WARNING)]
    if record.status != "ok" and problems:
        node.run_errors.append((record.started_at, "; ".join(problems)))
    for volume in record.volumes:
        fleet_row = rows.setdefault((node.node, volume.row.volume), FleetRow(node.node, volume.row.volume))
        fleet_row.runs.append(volume.row)
        fleet_row.services.update(volume.services)
        if volume.row.policy:
            fleet_row.policies.add(volume.row.policy)


def _count(row: FleetRow, manifest: dict[str, Any], started_at: datetime, verified: bool) -> None:
    row.statuses[str(manifest.get("status") or "?")] += 1
    row.verdicts[str(manifest.get("verdict") or "none")] += 1
    row.downtimes.append(float(manifest.get("downtime_s") or 0.0))
    containers = manifest.get("containers") or []
    row.archive_services.update(str(c.get("container", "")) for c in containers if isinstance(c, dict))
    if verified and (row.last_success is None or started_at > row.last_success):
        row.last_success = started_at


def render_fleet(report: FleetReport) -> list[str]:
    """The fleet report as text: a header; per node its runs and last record (silent nodes marked); one row per
    node and volume; the last failure of each; then what could not be read, and what cannot be seen."""
    period = report.period
    rows = report.rows
    runs = Counter[str]()
    for node in report.nodes:
        runs.update(node.runs)
    run_counts = ", ".join(f"{n} {status}" for status, n in sorted(runs.items()))
    names = sorted({row.node for row in rows} | {node.node for node in report.nodes})
    lines = [
        f"coord fleet report {period.label} ({short_time(period.start)} .. {short_time(period.end)}): "
        f"{len(names)} node(s), {sum(runs.values())} run(s) recorded"
        + (f" ({run_counts})" if run_counts else "")
        + f", {sum(row.archives for row in rows)} archive(s) published"
    ]
    if report.nodes:
        node_header: tuple[str, ...] = ("node", "runs", "ok", "failed", "last record", "")
        nodes_table = [node_header] + [
            (
                node.node,
                str(sum(node.runs.values())),
                str(node.runs.get("ok", 0)),
                str(sum(n for status, n in node.runs.items() if status != "ok")),
                short_time(node.last_seen),
                "SILENT: no run record in this period" if node.silent else "",
            )
            for node in report.nodes
        ]
        lines += _table(nodes_table, right_aligned=(1, 2, 3))
    if not rows:
        lines.append("no run recorded and no archive published in this period on these targets")
    else:
        header = ("node", "volume", "services", "runs", "ok", "warn", "fail", "rate", "verdicts", "downtime mean",
                  "max", "archives", "last success")  # fmt: skip
        table: list[tuple[str, ...]] = [header] + [_row_cells(row) for row in rows]
        lines += _table(table, right_aligned=(3, 4, 5, 6, 7, 9, 10, 11))
    for row in rows:
        failure = row.last_failure
        if failure is not None:
            lines.append(
                f"last failure: {row.node} {row.volume} ({row.run_count('failed')} of {row.run_count()} runs failed) "
                f"{short_time(failure.started_at)} run {failure.run_id}: {failure.error or 'failed'}"
            )
    for node in report.nodes:
        lines += [f"run failed: {node.node} {short_time(at)}: {error}" for at, error in node.run_errors]
    return lines + [f"not read: {error}" for error in report.errors] + [f"note: {note}" for note in report.notes]


def _row_cells(row: FleetRow) -> tuple[str, ...]:
    downtimes, rate = row.run_downtimes, row.success_rate
    return (
        row.node,
        row.volume,
        ", ".join(row.service_names) or "-",
        str(row.run_count()),
        str(row.run_count("ok")),
        str(row.run_count("warning")),
        str(row.run_count("failed")),
        "-" if rate is None else f"{rate:.0%}",
        ", ".join(f"{verdict} {n}" for verdict, n in sorted(row.run_verdicts.items())) or "-",
        f"{sum(downtimes) / len(downtimes):.2f}s" if downtimes else "-",
        f"{max(downtimes):.2f}s" if downtimes else "-",
        str(row.archives),
        short_time(row.last_run_success),
    )
