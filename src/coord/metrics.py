"""Prometheus metrics of coord's backups, from the run history: one place builds them for the textfile collector
file (`--metrics-file`, written after each run) and for the daemon's scrape endpoint (`--metrics-addr`).

    history (each volume's last run, its last kept archive, the latest run, the daemon's next run)
        -> CoordState -> metric families (coord_...) -> textfile (atomic rename) | /metrics (read at each scrape)

The metrics come from the history, not from one run's result, so a run of one policy does not drop the other
policies' volumes from the file, and the endpoint also shows manual runs made beside the daemon. Volumes no
longer backed up (their policy is gone, or a later run of their policy went without them: `coord status` marks
them GONE) drop out, so that an alert on their age does not fire forever. docs/monitoring.md lists every metric.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from coord.consistency import Verdict
from coord.errors import UsageError
from coord.fsutil import fsync_directory
from coord.history import CRASHED, FAILED, INTERRUPTED, OK, RUNNING, DrillRow, History, VolumeRow
from coord.node import this_node
from coord.policy import current_policy_names
from coord.problems import ProblemKind
from coord.report import status_of
from coord.results import TargetStatus, VolumeStatus

log = logging.getLogger("coord.metrics")

VOLUME_LABELS = ("node", "volume", "policy")
RUN_STATUSES = (OK, FAILED, INTERRUPTED, CRASHED, RUNNING)
VOLUME_STATUSES = tuple(status.value for status in VolumeStatus)
VERDICTS = tuple(verdict.value for verdict in Verdict)
WARNING_KINDS = tuple(kind.value for kind in ProblemKind if kind is not ProblemKind.CRITICAL)
TARGET_STATUSES = tuple(status.value for status in TargetStatus)


@dataclass(frozen=True)
class TargetOutcome:
    """How the volume's last run sent its archive to one named target (the history's `targets` of the row)."""

    target: str
    status: str  # one of TARGET_STATUSES


def target_outcomes(row: VolumeRow) -> tuple[TargetOutcome, ...]:
    """The per-target outcomes recorded with `row` (none for rows written before the history kept them)."""
    return tuple(
        TargetOutcome(str(item["target"]), str(item["status"]))
        for item in row.targets
        if item.get("target") and item.get("status")
    )


@dataclass(frozen=True)
class VolumeState:
    """One volume: its last run, and its latest run that kept an archive (None when none ever did)."""

    last: VolumeRow
    kept: VolumeRow | None
    targets: tuple[TargetOutcome, ...] = ()


@dataclass(frozen=True)
class CoordState:
    """What the metrics show, as read from the history."""

    volumes: list[VolumeState] = field(default_factory=list)
    last_run_started: datetime | None = None
    last_run_status: str | None = None
    next_run_at: datetime | None = None  # the running daemon's next scheduled run
    node: str = field(default_factory=this_node)  # the node these volumes are on: the `node` label
    drills: list[DrillRow] = field(default_factory=list)  # each volume's last restore drill (History.last_drills)


def read_state(history: History, policies: Iterable[str] | None = None) -> CoordState:
    """The state of `history`; `policies`, the current policy names when known, marks volumes of removed
    policies as gone. Raises HistoryError."""
    found = status_of(history, policies)
    gone = found["gone"]
    kept = history.last_kept_per_volume()
    volumes = [
        VolumeState(row, kept.get(row.volume), target_outcomes(row))
        for row in found["volumes"]
        if (row.policy, row.volume) not in gone
    ]
    latest = found["last_run"]
    daemon = history.daemon()
    return CoordState(
        volumes=volumes,
        last_run_started=latest.started_at if latest else None,
        last_run_status=found["last_run_status"],
        next_run_at=daemon.next_run_at if daemon is not None and daemon.alive() else None,
        drills=list(history.last_drills().values()),
    )


def _gauge(name: str, documentation: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))


def _one_hot(family: GaugeMetricFamily, labels: list[str], values: Sequence[str], current: str | None) -> None:
    for value in values:
        family.add_metric([*labels, value], 1.0 if value == current else 0.0)


def volume_families(volumes: Sequence[VolumeState], node: str) -> list[Metric]:
    """The per-volume metrics, labelled node (the node coord runs on, whose volumes these are: a fleet's
    Prometheus tells same-named volumes of two nodes apart), volume and policy (the policy of the volume's last
    run)."""
    run_time = _gauge(
        "coord_volume_last_run_timestamp_seconds", "Start of the volume's last backup run.", VOLUME_LABELS
    )
    status = _gauge(
        "coord_volume_last_run_status",
        "1 for the status of the volume's last run (ok, warning, failed, excluded), 0 for the others.",
        (*VOLUME_LABELS, "status"),
    )
    duration = _gauge("coord_volume_last_run_duration_seconds", "How long the volume's last run took.", VOLUME_LABELS)
    downtime = _gauge(
        "coord_volume_last_run_downtime_seconds",
        "Longest time a container was paused or stopped for the volume's last run (0: none was).",
        VOLUME_LABELS,
    )
    verdict = _gauge(
        "coord_volume_last_run_verdict",
        "1 for the consistency verdict of the volume's last run (consistent, fuzzy, at-risk), 0 for the others; "
        "all 0 when it has none (excluded, or failed before the read).",
        (*VOLUME_LABELS, "verdict"),
    )
    warnings = _gauge(
        "coord_volume_last_run_warning_entries",
        "Entries that vanished, changed, shrank or were skipped while the volume's last run read it.",
        (*VOLUME_LABELS, "kind"),
    )
    success = _gauge(
        "coord_volume_last_success_timestamp_seconds",
        "Start of the volume's latest run that kept an archive (ok or warning).",
        VOLUME_LABELS,
    )
    size = _gauge("coord_volume_archive_size_bytes", "Size of the volume's latest kept archive.", VOLUME_LABELS)
    entries = _gauge("coord_volume_archive_entries", "Entries in the volume's latest kept archive.", VOLUME_LABELS)
    targets = _gauge(
        "coord_volume_target_last_run_status",
        "1 for how the volume's last run sent its archive to a named target (ok, failed, skipped: not tried "
        "because the volume failed first), 0 for the others.",
        (*VOLUME_LABELS, "target", "status"),
    )
    for volume in volumes:
        last, labels = volume.last, [node, volume.last.volume, volume.last.policy]
        run_time.add_metric(labels, last.started_at.timestamp())
        _one_hot(status, labels, VOLUME_STATUSES, last.status)
        duration.add_metric(labels, last.duration_s)
        downtime.add_metric(labels, last.downtime_s)
        _one_hot(verdict, labels, VERDICTS, last.verdict)
        for kind in WARNING_KINDS:
            warnings.add_metric([*labels, kind], float(last.warnings.get(kind, 0)))
        if volume.kept is not None:
            success.add_metric(labels, volume.kept.started_at.timestamp())
            size.add_metric(labels, float(volume.kept.size))
            if volume.kept.entries is not None:  # None: recorded before the history kept entry counts
                entries.add_metric(labels, float(volume.kept.entries))
        for outcome in volume.targets:
            _one_hot(targets, [*labels, outcome.target], TARGET_STATUSES, outcome.status)
    return [run_time, status, duration, downtime, verdict, warnings, success, size, entries, targets]


DRILL_LABELS = ("node", "volume", "target")
DRILL_STATUSES = (OK, FAILED)


def drill_families(drills: Sequence[DrillRow], node: str) -> list[Metric]:
    """Each volume's last restore drill (a failed one on any target wins over a later pass on another, as in
    `coord report`), labelled node, volume and the target it read (empty for drills before targets)."""
    when = _gauge(
        "coord_volume_last_drill_timestamp_seconds", "Start of the volume's last restore drill.", DRILL_LABELS
    )
    status = _gauge(
        "coord_volume_last_drill_status",
        "1 for the outcome of the volume's last restore drill (ok, failed), 0 for the other.",
        (*DRILL_LABELS, "status"),
    )
    for drill in drills:
        labels = [node, drill.volume, drill.target or ""]
        when.add_metric(labels, drill.started_at.timestamp())
        _one_hot(status, labels, DRILL_STATUSES, drill.status)
    return [when, status]


def metric_families(state: CoordState) -> list[Metric]:
    """Every metric coord exports, from `state`."""
    run_time = _gauge("coord_last_run_timestamp_seconds", "Start of the latest backup run, of any policy.")
    run_status = _gauge(
        "coord_last_run_status",
        "1 for the status of the latest backup run (ok, failed, interrupted, crashed, running), 0 for the others.",
        ("status",),
    )
    next_run = _gauge(
        "coord_daemon_next_run_timestamp_seconds", "When the running coord daemon starts its next scheduled run."
    )
    if state.last_run_started is not None:
        run_time.add_metric([], state.last_run_started.timestamp())
        _one_hot(run_status, [], RUN_STATUSES, state.last_run_status)
    if state.next_run_at is not None:
        next_run.add_metric([], state.next_run_at.timestamp())
    return [
        run_time,
        run_status,
        next_run,
        *volume_families(state.volumes, state.node),
        *drill_families(state.drills, state.node),
    ]


class HistoryCollector(Collector):
    """A prometheus_client collector that reads the history at each collection (each scrape)."""

    def __init__(self, history: History, policies_dir: Path | None = None) -> None:
        self.history = history
        self.policies_dir = policies_dir

    def describe(self) -> Iterable[Metric]:
        return metric_families(CoordState())  # the names only: registering reads no history

    def collect(self) -> Iterable[Metric]:
        return metric_families(read_state(self.history, current_policy_names(self.policies_dir)))


def registry_of(history: History, policies_dir: Path | None = None) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(HistoryCollector(history, policies_dir))
    return registry


def render_metrics(history: History, policies_dir: Path | None = None) -> bytes:
    """The metrics in Prometheus's text exposition format. Raises HistoryError."""
    return generate_latest(registry_of(history, policies_dir))


def write_metrics_file(path: Path, history: History, policies_dir: Path | None = None) -> None:
    """Write the metrics to `path` for node_exporter's textfile collector: a temporary file beside it (a name the
    collector skips: it reads only *.prom), fsynced, renamed over it, so a scrape never reads half a file.
    Raises OSError and HistoryError, and then leaves no temporary file."""
    data = render_metrics(history, policies_dir)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)  # node_exporter often runs as another user
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def parse_listen_address(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `[IPv6]:PORT` or `:PORT` (every IPv4 interface) -> (host, port); port 0 takes a free one.
    Raises UsageError."""
    host, colon, port_text = text.rpartition(":")
    if not colon or not port_text.isdigit() or int(port_text) > 65535:
        raise UsageError(f"--metrics-addr '{text}': expected HOST:PORT, e.g. 127.0.0.1:9847 or [::1]:9847")
    host = host.removeprefix("[").removesuffix("]") or "0.0.0.0"
    return host, int(port_text)


@dataclass
class MetricsServer:
    """The daemon's /metrics endpoint, served from a background thread; `close()` stops it."""

    address: str
    _server: Any = None
    _thread: threading.Thread | None = None

    @classmethod
    def start(cls, text: str, history: History, policies_dir: Path | None = None) -> MetricsServer:
        """Listen on `text` (HOST:PORT). Raises UsageError for a bad address or one that cannot be bound."""
        host, port = parse_listen_address(text)
        try:
            server, thread = start_http_server(port, host, registry_of(history, policies_dir))
        except OSError as error:  # address in use, not ours, or a host name that does not resolve
            raise UsageError(f"--metrics-addr {text}: cannot listen there: {error.strerror or error}") from None
        shown_host = f"[{host}]" if ":" in host else host
        return cls(f"{shown_host}:{server.server_port}", server, thread)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
