"""Run records: one small JSON document per backup run, published to the run's targets, so that `coord report
--fleet` sees every run of every node, the failed ones too (a target otherwise holds successes only: an archive
is published only when it is complete and checked).

    <target root>/_runs/<node>/<YYYYmmddTHHMMSSZ>-<run id>.json

The stamp is the run's start (UTC), the run id its id in that node's history: the name alone says when a run
started, so the fleet report lists names and downloads only the records of its period. A record holds the run
(node, run id, trigger, start, end, status, run-level errors, coord version) and, per volume, the history's own
row of it (history.VolumeRow, the model `coord report` aggregates), with the services and containers quiesced,
the archive refs published and a short error message (docs/targets.md gives the format).

Never lose a failure: the record is first kept in `<state dir>/runs-unpublished/<target>/<node>/<file>`, then
published; only a published record is removed from there. A record that could not be published (the target is
down: exactly the run the fleet must see) stays and is published by the next run, oldest first, before that
run's own. Publishing is best effort for the run's verdict: a record that could not be published is a warning
of the run, never a failure of its backups.

A reader never sees half a record: on an rclone target it is written as `<file>.partial` and renamed (as every
manifest: upload.write_whole), on a local one written whole beside it and renamed (fsutil.write_json_atomically).
A restic repository carries no records (its snapshots are coord's archives and manifests only); the fleet
report says so for such a target. `coord prune` removes records older than `run_records.keep_days` days
(_defaults.yaml, 90 by default).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from coord import __version__
from coord.errors import CoordError
from coord.fsutil import write_json_atomically
from coord.history import RunRow, VolumeRow, volume_row_of
from coord.results import RunResult, TargetStatus, VolumeResult
from coord.targets import Target
from coord.targets.archives import ArchiveStore, LocalStore, RcloneStore, remote_join
from coord.targets.rclone import Rclone
from coord.timestamps import FILE_STAMP_FORMAT, file_stamp

log = logging.getLogger("coord.run_records")

RUNS_DIRECTORY = "_runs"  # at a target's root; `_` names there are not volumes
UNPUBLISHED_DIRECTORY = "runs-unpublished"  # in the state directory
RECORD_FORMAT = 1
RECORD_KIND = "coord-run"
RECORD_NAME = re.compile(r"^(\d{8}T\d{6}Z)-(\d+)\.json$")
ERROR_LIMIT = 500  # characters of a volume's error kept in a record: what failed, not a whole log


def record_name(started_at: datetime, run_id: int) -> str:
    """`20261201T060000Z-12.json`: the run's start and its id in the node's history."""
    return f"{file_stamp(started_at)}-{run_id}.json"


def stamp_of(name: str) -> datetime | None:
    """The run's start a record's file name carries; None for a name that is not a record's (a temporary, a
    stranger's file)."""
    match = RECORD_NAME.match(name)
    if not match:
        return None
    try:
        return datetime.strptime(match[1], FILE_STAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def node_directory(node: str) -> str:
    """The node's directory name under `_runs/`: its name, with what a path cannot hold replaced by `_`."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", node).lstrip(".")
    return safe or "_"


def short_error(text: str | None) -> str | None:
    if text is None or len(text) <= ERROR_LIMIT:
        return text
    return text[: ERROR_LIMIT - 3] + "..."


def services_of(result: VolumeResult) -> list[str]:
    """The Swarm services (by name, from their tasks' labels) and plain containers quiesced for the volume."""
    names = [action.service or action.container for action in result.containers if action.action != "left-alone"]
    return sorted({name.removeprefix("service ") for name in names if name})


def volume_record(run_id: int, started_at: datetime, result: VolumeResult) -> dict[str, Any]:
    """One volume of a record: the history's row of it (VolumeRow.to_json), its error shortened, plus the
    services quiesced and the refs of the archives published."""
    row = volume_row_of(run_id, started_at, result)
    document = row.to_json()
    document["error"] = short_error(row.error)
    document["services"] = services_of(result)
    document["archives"] = [target.ref for target in result.targets if target.status is TargetStatus.OK and target.ref]
    return document


def build_record(node: str, run: RunRow, result: RunResult | None) -> dict[str, Any]:
    """The record of one finished run: the history's row of the run (`run`, as `coord status --json` shows it,
    its errors shortened) and of each volume of `result` (None when the run could not be done: the run's
    errors say why)."""
    volumes = result.volumes if result is not None else []
    return {
        "format": RECORD_FORMAT,
        "kind": RECORD_KIND,
        "node": node,
        "coord_version": __version__,
        "run": {**run.to_json(), "errors": [short_error(error) for error in run.errors]},
        "volumes": [volume_record(run.id, run.started_at, volume) for volume in volumes],
    }


@dataclass(frozen=True)
class RecordedVolume:
    """One volume of a record read back: the history's row, the services quiesced, the archive refs."""

    row: VolumeRow
    services: list[str]
    archives: list[str]


@dataclass(frozen=True)
class ReadRecord:
    """A record read back, as the fleet report counts it."""

    node: str
    run_id: int
    started_at: datetime
    status: str  # the run's: ok, failed, interrupted
    errors: list[str]  # the run's problems
    volumes: list[RecordedVolume]


def read_record(document: dict[str, Any]) -> ReadRecord:
    """Read a record's JSON. Raises ValueError, KeyError or TypeError for one not shaped as coord writes them."""
    if document.get("kind") != RECORD_KIND:
        raise ValueError("not a coord run record")
    run = document["run"]
    run_id, started = int(run["id"]), _moment(run["started_at"])
    volumes = []
    for item in document.get("volumes") or []:
        row = VolumeRow(
            run_id=run_id,
            started_at=started,
            volume=str(item["volume"]),
            policy=str(item.get("policy") or ""),
            strategy=str(item.get("strategy") or ""),
            status=str(item["status"]),
            verdict=item.get("verdict"),
            warnings=dict(item.get("warnings") or {}),
            downtime_s=float(item.get("downtime_s") or 0.0),
            size=int(item.get("size") or 0),
            duration_s=float(item.get("duration_s") or 0.0),
            archive=item.get("archive"),
            error=item.get("error"),
            entries=item.get("entries"),
            targets=list(item.get("targets") or []),
        )
        services = [str(name) for name in item.get("services") or []]
        volumes.append(RecordedVolume(row, services, [str(ref) for ref in item.get("archives") or []]))
    errors = [str(error) for error in run.get("errors") or []]
    return ReadRecord(str(document["node"]), run_id, started, str(run["status"]), errors, volumes)


def _moment(text: object) -> datetime:
    if not isinstance(text, str):
        raise ValueError(f"not a time: {text!r}")
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# ---------------------------------------------------------------------------------------------------------------
# Publishing


def carries_records(target: Target) -> bool:
    """Whether run records go to `target`: local and rclone targets; a restic repository does not."""
    return not target.is_restic


def _queue(state_dir: Path, target: str) -> Path:
    return state_dir / UNPUBLISHED_DIRECTORY / target


def keep_unpublished(state_dir: Path, targets: Iterable[Target], record: dict[str, Any]) -> list[str]:
    """Keep `record` in the state directory for each of `targets` that carries records, before anything is
    published (an interrupted run only does this). Returns the problems: the targets it could not be kept for."""
    problems = [_keep(state_dir, target, record) for target in targets if carries_records(target)]
    return [problem for problem in problems if problem]


def _keep(state_dir: Path, target: Target, record: dict[str, Any]) -> str | None:
    """Keep `record` for `target`; the problem when it could not be, else None."""
    name = name_of(record)
    directory = _queue(state_dir, target.name) / node_directory(str(record["node"]))
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_json_atomically(directory / name, record)
    except OSError as error:
        return f"run record {name} could not be kept in {directory} for target {target.name}: {error}"
    return None


def name_of(record: dict[str, Any]) -> str:
    """The file name of a record built by build_record."""
    return record_name(_moment(record["run"]["started_at"]), int(record["run"]["id"]))


@dataclass
class Publication:
    """What publishing the kept records to one target did."""

    target: str
    published: list[str] = field(default_factory=list)  # `<node>/<file>`, oldest first
    kept: int = 0  # records still waiting for this target
    error: str | None = None

    def warning(self, state_dir: Path) -> str | None:
        if self.error is None:
            return None
        return (
            f"run records not published to target {self.target}: {self.error}; {self.kept} kept in "
            f"{_queue(state_dir, self.target)}, published by the next run"
        )


def pending(state_dir: Path, target: str) -> list[tuple[str, str]]:
    """The records kept for `target`, oldest first: (node directory, file name)."""
    root = _queue(state_dir, target)
    if not root.is_dir():
        return []
    found = []
    for node in os.scandir(root):
        if node.is_dir(follow_symlinks=False):
            found += [(node.name, entry.name) for entry in os.scandir(node.path) if stamp_of(entry.name) is not None]
    return sorted(found, key=lambda item: (stamp_of(item[1]), item[0], item[1]))


def publish_pending(state_dir: Path, target: Target) -> Publication:
    """Publish every record kept for `target`, oldest first; each one published is removed from the state
    directory. Stops at the first failure (the rest stay, in order). Never raises."""
    publication = Publication(target.name)
    queued = pending(state_dir, target.name)
    for index, (node, name) in enumerate(queued):
        kept = _queue(state_dir, target.name) / node / name
        try:
            data = kept.read_bytes()
            json.loads(data)
        except (OSError, ValueError) as error:  # not a record any more: set aside, it must not block the others
            log.warning("%s: unreadable (%s): set aside as %s.unreadable, not published", kept, error, kept.name)
            with contextlib.suppress(OSError):
                kept.rename(kept.with_name(kept.name + ".unreadable"))
            continue
        try:
            write_record(target, node, name, data)
            kept.unlink(missing_ok=True)
        except (CoordError, OSError) as error:
            publication.error = error.message if isinstance(error, CoordError) else str(error)
            publication.kept = len(queued) - index
            return publication
        publication.published.append(f"{node}/{name}")
    return publication


def write_record(target: Target, node: str, name: str, data: bytes) -> None:
    """Put one record on `target` at `_runs/<node>/<name>`, whole or not at all. One already there (published
    by a run that died before it removed its copy) is left as it is. Raises CoordError, OSError."""
    if target.local_path is not None:
        path = target.local_path / RUNS_DIRECTORY / node / name
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomically(path, json.loads(data))
        return
    from coord.backup.upload import write_whole

    rclone = target.rclone()
    location = target.location(RUNS_DIRECTORY, node, name)
    if rclone.stat(location) is None:
        write_whole(rclone, data, location)


def publish_run_record(state_dir: Path, targets: Sequence[Target], record: dict[str, Any]) -> list[str]:
    """Keep `record` for each target that carries records, then publish what is kept for each (earlier runs'
    records first). Returns the warnings: records kept for a later run, or not kept at all. Never raises."""
    warnings = []
    for target in targets:
        if not carries_records(target):
            continue
        problem = _keep(state_dir, target, record)
        if problem is not None:  # the state directory cannot hold it: this run's chance is the only one
            log.warning("%s", problem)
            try:
                write_record(target, node_directory(str(record["node"])), name_of(record), json.dumps(record).encode())
            except (CoordError, OSError) as error:
                warnings.append(f"{problem}; publishing it failed too: {getattr(error, 'message', error)} (lost)")
        publication = publish_pending(state_dir, target)
        if len(publication.published) > 1:
            log.info(
                "target %s: published %d run records kept by earlier runs", target.name, len(publication.published) - 1
            )
        warning = publication.warning(state_dir)
        if warning:
            log.warning("%s", warning)
            warnings.append(warning)
    return warnings


# ---------------------------------------------------------------------------------------------------------------
# Reading and pruning


@dataclass(frozen=True)
class RecordShelf:
    """The `_runs/` directory of one target, read: its nodes, their records' names, a record. A local target
    (`local_root`) or an rclone one (`remote_root`, read with `rclone`)."""

    target: str
    local_root: Path | None = None
    remote_root: str | None = None
    rclone: Rclone | None = None

    def nodes(self) -> list[str]:
        """The node directories under `_runs/`. Raises CoordError, OSError."""
        if self.local_root is not None:
            root = self.local_root / RUNS_DIRECTORY
            if not root.is_dir():
                return []
            return sorted(
                e.name for e in os.scandir(root) if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")
            )
        assert self.rclone is not None and self.remote_root is not None
        return [name for name in self.rclone.list_dirs(remote_join(self.remote_root, RUNS_DIRECTORY))
                if not name.startswith(".")]  # fmt: skip

    def names(self, node: str) -> list[str]:
        """The records' file names of `node` (temporaries and strangers' files left out). Raises CoordError, OSError."""
        if self.local_root is not None:
            directory = self.local_root / RUNS_DIRECTORY / node
            entries = [e.name for e in os.scandir(directory) if e.is_file(follow_symlinks=False)]
        else:
            assert self.rclone is not None and self.remote_root is not None
            entries = [
                item.name for item in self.rclone.list_files(remote_join(self.remote_root, RUNS_DIRECTORY, node))
            ]
        return sorted(name for name in entries if stamp_of(name) is not None)

    def read(self, node: str, name: str) -> dict[str, Any]:
        """One record. Raises CoordError, OSError, ValueError (not a record)."""
        if self.local_root is not None:
            data = (self.local_root / RUNS_DIRECTORY / node / name).read_bytes()
        else:
            assert self.rclone is not None and self.remote_root is not None
            data = self.rclone.read_bytes(remote_join(self.remote_root, RUNS_DIRECTORY, node, name))
        document = json.loads(data)
        if not isinstance(document, dict):
            raise ValueError("not a coord run record")
        return document

    def delete(self, node: str, name: str) -> None:
        """Raises CoordError, OSError."""
        if self.local_root is not None:
            (self.local_root / RUNS_DIRECTORY / node / name).unlink(missing_ok=True)
        else:
            assert self.rclone is not None and self.remote_root is not None
            self.rclone.delete(remote_join(self.remote_root, RUNS_DIRECTORY, node, name))

    def where(self, node: str, name: str) -> str:
        """The record's path on the target, for messages."""
        if self.local_root is not None:
            return str(self.local_root / RUNS_DIRECTORY / node / name)
        assert self.remote_root is not None
        return remote_join(self.remote_root, RUNS_DIRECTORY, node, name)


def shelf_of(store: ArchiveStore) -> RecordShelf | None:
    """The run records of a target's store; None for a restic repository (it carries none)."""
    if isinstance(store, LocalStore):
        return RecordShelf(store.name, local_root=store.root)
    if isinstance(store, RcloneStore):
        return RecordShelf(store.name, remote_root=store.root, rclone=store.rclone)
    return None


@dataclass
class RecordPrune:
    """What `coord prune` did to one target's run records."""

    target: str
    deleted: list[str] = field(default_factory=list)
    kept: int = 0
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "deleted": self.deleted, "kept": self.kept, "errors": self.errors}


def prune_records(store: ArchiveStore, keep_days: int, now: datetime, dry_run: bool = False) -> RecordPrune | None:
    """Delete the run records on `store` whose run started more than `keep_days` days before `now` (by their
    names). None for a store that carries no records. Never raises: what could not be done is in `errors`."""
    shelf = shelf_of(store)
    if shelf is None:
        return None
    result = RecordPrune(store.name)
    cutoff = now - timedelta(days=keep_days)
    try:
        nodes = shelf.nodes()
    except (CoordError, OSError) as error:
        result.errors.append(f"listing run records: {getattr(error, 'message', error)}")
        return result
    for node in nodes:
        try:
            names = shelf.names(node)
        except (CoordError, OSError) as error:
            result.errors.append(f"listing run records of {node}: {getattr(error, 'message', error)}")
            continue
        for name in names:
            stamp = stamp_of(name)
            if stamp is None or stamp >= cutoff:
                result.kept += 1
                continue
            try:
                if not dry_run:
                    shelf.delete(node, name)
            except (CoordError, OSError) as error:
                result.errors.append(f"cannot delete {shelf.where(node, name)}: {getattr(error, 'message', error)}")
                continue
            result.deleted.append(shelf.where(node, name))
    return result


def prune_run_records(policies_dir: Path, stores: Sequence[ArchiveStore], dry_run: bool) -> list[RecordPrune]:
    """`coord prune`: the run records older than `run_records.keep_days` (_defaults.yaml) on every store that
    carries records. Raises PolicyError (invalid _defaults.yaml) before anything is deleted."""
    from coord.defaults import load_defaults

    keep_days = load_defaults(policies_dir).run_records.keep_days
    now = datetime.now(UTC)
    return [result for store in stores if (result := prune_records(store, keep_days, now, dry_run)) is not None]
