"""The fleet report (`coord report --fleet`): what every node published to the shared targets, per node, service
and volume, read from the manifests (each names the node that wrote it: `node`, else its `host`).

Only complete archives have manifests: a run that failed on a node publishes nothing, so the fleet report counts
what landed (ok / warning, verdicts, downtime, last success); a node's failures are in its own history
(`coord report` there). An archive found on several targets is counted once.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from coord.errors import CoordError
from coord.render import short_time
from coord.report import Period, _table
from coord.targets.archives import ArchiveStore

log = logging.getLogger("coord.fleet")


@dataclass
class FleetRow:
    """One node's archives of one volume in the period."""

    node: str
    volume: str
    services: set[str] = field(default_factory=set)  # Swarm services (and containers) quiesced for it
    statuses: Counter[str] = field(default_factory=Counter)
    verdicts: Counter[str] = field(default_factory=Counter)
    downtimes: list[float] = field(default_factory=list)
    last_success: datetime | None = None
    targets: set[str] = field(default_factory=set)

    @property
    def archives(self) -> int:
        return sum(self.statuses.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "volume": self.volume,
            "services": sorted(self.services),
            "archives": self.archives,
            "statuses": dict(self.statuses),
            "verdicts": dict(self.verdicts),
            "downtime_mean_s": round(sum(self.downtimes) / len(self.downtimes), 3) if self.downtimes else None,
            "downtime_max_s": round(max(self.downtimes), 3) if self.downtimes else None,
            "last_success": self.last_success.isoformat() if self.last_success else None,
            "targets": sorted(self.targets),
        }


@dataclass
class FleetReport:
    period: Period
    rows: list[FleetRow]
    errors: list[str]  # targets or manifests that could not be read

    def to_json(self) -> dict[str, Any]:
        return {
            "period": self.period.to_json(),
            "nodes": sorted({row.node for row in self.rows}),
            "rows": [row.to_json() for row in self.rows],
            "errors": self.errors,
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
    return FleetReport(period, sorted(rows.values(), key=lambda row: (row.node, row.volume)), errors)


def _count(row: FleetRow, manifest: dict[str, Any], started_at: datetime, verified: bool) -> None:
    row.statuses[str(manifest.get("status") or "?")] += 1
    row.verdicts[str(manifest.get("verdict") or "none")] += 1
    row.downtimes.append(float(manifest.get("downtime_s") or 0.0))
    row.services.update(str(c.get("container", "")) for c in manifest.get("containers") or [] if isinstance(c, dict))
    if verified and (row.last_success is None or started_at > row.last_success):
        row.last_success = started_at


def render_fleet(report: FleetReport) -> list[str]:
    """The fleet report as text: a header, one row per node and volume, then what could not be read."""
    period = report.period
    nodes = sorted({row.node for row in report.rows})
    lines = [
        f"coord fleet report {period.label} ({short_time(period.start)} .. {short_time(period.end)}): "
        f"{len(nodes)} node(s), {sum(row.archives for row in report.rows)} archive(s) published"
    ]
    if not report.rows:
        lines.append("no archive published in this period on these targets")
    else:
        header = ("node", "volume", "services", "archives", "ok", "warn", "verdicts", "downtime mean", "max",
                  "last success")  # fmt: skip
        table = [header] + [
            (
                row.node,
                row.volume,
                ", ".join(sorted(row.services)) or "-",
                str(row.archives),
                str(row.statuses.get("ok", 0)),
                str(row.statuses.get("warning", 0)),
                ", ".join(f"{verdict} {n}" for verdict, n in sorted(row.verdicts.items())),
                f"{sum(row.downtimes) / len(row.downtimes):.2f}s" if row.downtimes else "-",
                f"{max(row.downtimes):.2f}s" if row.downtimes else "-",
                short_time(row.last_success),
            )
            for row in report.rows
        ]
        lines += _table(table, right_aligned=(3, 4, 5, 7, 8))
    return lines + [f"not read: {error}" for error in report.errors]
