"""Run history: every backup run and each volume's outcome, durably, in <state dir>/history.sqlite3.

SQLite from the standard library: one file, safe for several processes at once (WAL mode, a busy timeout,
writes in `BEGIN IMMEDIATE` transactions, `synchronous=FULL` so a finished run survives a power cut), and
queryable with the `sqlite3` shell. The schema version is `PRAGMA user_version`; newer coords migrate older
files forward, an older coord refuses a newer file.

A run's row is written when it starts, with status `running`, its pid and that process's identity (boot id
and start time from /proc); it is finalized when the run ends: `ok`, `failed` or `interrupted`. A row still
`running` whose process is gone (killed, OOM, power cut) is shown as `crashed`; the next recorded run stores
that status. The pid alone is not trusted: pids are reused, so the process's start time must match too. The
check needs the /proc of the pid namespace the run lived in (run `coord status` where the run ran, e.g. with
`docker exec` into a sidecar); a row from another host is left `running`.

Times are stored as UTC ISO 8601 text (`2026-11-27T03:00:00.000000Z`), which sorts and reads well in SQL.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from coord.errors import HistoryError
from coord.problems import WARNING_KINDS
from coord.results import RunResult, VolumeResult
from coord.timestamps import utc_iso_or_none

HISTORY_FILE = "history.sqlite3"
BUSY_TIMEOUT_S = 30.0

RUN_WARNING = "warning: "  # a run's problem that did not fail it (History.note_run), among its errors

RUNNING = "running"
OK = "ok"
FAILED = "failed"
INTERRUPTED = "interrupted"
CRASHED = "crashed"

# One tuple of statements per schema version; version N is MIGRATIONS[N - 1]. Only ever append.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            status TEXT NOT NULL,           -- running | ok | failed | interrupted | crashed
            trigger TEXT NOT NULL,          -- manual | schedule
            pid INTEGER NOT NULL,
            process TEXT,                   -- boot id and start time of pid: tells a reused pid apart
            host TEXT NOT NULL,
            policies TEXT NOT NULL,         -- JSON list of the selected policies; [] = all
            errors TEXT NOT NULL DEFAULT '[]',  -- JSON list: run-level problems, or why the run could not be done
            volume_count INTEGER NOT NULL DEFAULT 0,
            failed_count INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX runs_started ON runs (started_at)",
        """CREATE TABLE volume_runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id INTEGER NOT NULL REFERENCES runs (id),
            started_at TEXT NOT NULL,       -- the run's start: reports group by it
            volume TEXT NOT NULL,
            policy TEXT NOT NULL,
            strategy TEXT NOT NULL,
            status TEXT NOT NULL,           -- ok | warning | failed | excluded
            verdict TEXT,
            warnings TEXT NOT NULL,         -- JSON object: vanished, changed, shrank, skipped counts
            warning_count INTEGER NOT NULL, -- vanished + changed + shrank (skipped entries are not warnings)
            downtime_s REAL NOT NULL,
            size INTEGER NOT NULL,
            duration_s REAL NOT NULL,
            archive TEXT,
            error TEXT                      -- the volume's errors joined with '; ', NULL when none
        )""",
        "CREATE INDEX volume_runs_started ON volume_runs (started_at)",
        "CREATE INDEX volume_runs_volume ON volume_runs (volume, started_at)",
        """CREATE TABLE daemon (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            pid INTEGER NOT NULL,
            process TEXT,
            host TEXT NOT NULL,
            started_at TEXT NOT NULL,
            schedule TEXT NOT NULL,
            jitter_s REAL NOT NULL,
            next_run_at TEXT,
            stopped_at TEXT
        )""",
    ),
    (
        # The entry count of each archive: the anomaly rule compares it with the next one (anomaly.py).
        "ALTER TABLE volume_runs ADD COLUMN entries INTEGER",
        """CREATE TABLE drills (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            started_at TEXT NOT NULL,
            finished_at TEXT NOT NULL,
            volume TEXT NOT NULL,
            archive TEXT,                   -- NULL when no archive could be chosen
            status TEXT NOT NULL,           -- ok | failed
            trigger TEXT NOT NULL,          -- manual | schedule
            entries INTEGER NOT NULL,       -- entries restored and compared
            files_hashed INTEGER NOT NULL,  -- regular files whose content was hashed on both sides
            bytes_hashed INTEGER NOT NULL,
            duration_s REAL NOT NULL,
            problems TEXT NOT NULL          -- JSON list: what did not match, or why the drill could not be done
        )""",
        "CREATE INDEX drills_volume ON drills (volume, started_at)",
    ),
    (
        # Where each volume's archive went (results.TargetResult): a JSON list of {target, status, ref, error},
        # as in `coord backup --json`; [] in rows written before named targets.
        "ALTER TABLE volume_runs ADD COLUMN targets TEXT NOT NULL DEFAULT '[]'",
        # The target a drill read its archive from; NULL in rows written before drills read targets.
        "ALTER TABLE drills ADD COLUMN target TEXT",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str | None) -> datetime | None:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC) if text else None


def process_identity(pid: int) -> str | None:
    """'<boot id>/<start time in clock ticks>' of a live process, None when it does not exist or /proc is absent."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # the command name may contain spaces and parentheses
    return f"{boot}/{fields[19]}" if len(fields) > 19 else None


def process_alive(pid: int, identity: str | None) -> bool:
    """Whether the process that wrote a row still runs: same pid AND same start time (pids get reused)."""
    if identity is not None and Path("/proc/self/stat").exists():
        return process_identity(pid) == identity
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class RunRow:
    id: int
    started_at: datetime
    finished_at: datetime | None
    status: str  # as stored; see `effective_status`
    trigger: str
    pid: int
    process: str | None
    host: str
    policies: list[str]
    errors: list[str]
    volume_count: int
    failed_count: int

    def effective_status(self, here: str | None = None) -> str:
        """`crashed` for a row still `running` whose process is gone (on this host); the stored status otherwise."""
        if self.status == RUNNING and self.host == (here or socket.gethostname()):
            return RUNNING if process_alive(self.pid, self.process) else CRASHED
        return self.status

    def to_json(self, status: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "started_at": utc_iso_or_none(self.started_at),
            "finished_at": utc_iso_or_none(self.finished_at),
            "status": status or self.status,
            "trigger": self.trigger,
            "pid": self.pid,
            "host": self.host,
            "policies": self.policies,
            "errors": self.errors,
            "volumes": self.volume_count,
            "failed": self.failed_count,
        }


@dataclass(frozen=True)
class VolumeRow:
    run_id: int
    started_at: datetime
    volume: str
    policy: str
    strategy: str
    status: str
    verdict: str | None = None
    warnings: dict[str, int] = field(default_factory=dict)
    downtime_s: float = 0.0
    size: int = 0
    duration_s: float = 0.0
    archive: str | None = None
    error: str | None = None
    entries: int | None = None  # None in rows written before schema version 2
    targets: list[dict[str, Any]] = field(default_factory=list)  # TargetResult.to_json() each; [] before version 3

    @property
    def warning_count(self) -> int:
        return sum(self.warnings.get(kind, 0) for kind in WARNING_KINDS)

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run_id,
            "started_at": utc_iso_or_none(self.started_at),
            "volume": self.volume,
            "policy": self.policy,
            "strategy": self.strategy,
            "status": self.status,
            "verdict": self.verdict,
            "warnings": dict(self.warnings),
            "downtime_s": round(self.downtime_s, 3),
            "size": self.size,
            "duration_s": round(self.duration_s, 3),
            "archive": self.archive,
            "error": self.error,
            "entries": self.entries,
            "targets": [dict(target) for target in self.targets],
        }


@dataclass(frozen=True)
class DrillRow:
    """One restore drill (drill.py): which archive of which volume, how it went, and what did not match."""

    id: int
    started_at: datetime
    finished_at: datetime
    volume: str
    archive: str | None
    status: str  # ok | failed
    trigger: str
    entries: int
    files_hashed: int
    bytes_hashed: int
    duration_s: float
    problems: list[str]
    target: str | None = None  # None in rows written before schema version 3 (drills read only --dest)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "started_at": utc_iso_or_none(self.started_at),
            "finished_at": utc_iso_or_none(self.finished_at),
            "volume": self.volume,
            "target": self.target,
            "archive": self.archive,
            "status": self.status,
            "trigger": self.trigger,
            "entries": self.entries,
            "files_hashed": self.files_hashed,
            "bytes_hashed": self.bytes_hashed,
            "duration_s": round(self.duration_s, 3),
            "problems": list(self.problems),
        }


@dataclass(frozen=True)
class DaemonRow:
    pid: int
    process: str | None
    host: str
    started_at: datetime
    schedule: str
    jitter_s: float
    next_run_at: datetime | None
    stopped_at: datetime | None

    def alive(self) -> bool:
        return self.stopped_at is None and process_alive(self.pid, self.process)


def volume_row_of(run_id: int, started_at: datetime, result: VolumeResult) -> VolumeRow:
    return VolumeRow(
        run_id=run_id,
        started_at=started_at,
        volume=result.volume,
        policy=result.policy,
        strategy=result.strategy,
        status=result.status.value,
        verdict=result.verdict,
        warnings=dict(result.warnings),
        downtime_s=result.downtime_s,
        size=result.size,
        duration_s=result.duration_s,
        archive=result.archive,
        error="; ".join(result.errors) or None,
        entries=result.entries,
        targets=[target.to_json() for target in result.targets],
    )


class History:
    """The history database of one state directory. Each call opens, uses and closes its own connection."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / HISTORY_FILE

    # -- writing ------------------------------------------------------------------------------------------

    def start_run(self, trigger: str, policies: Sequence[str] = (), now: datetime | None = None) -> int:
        """Write a `running` row for this process; returns its id. Raises HistoryError."""
        pid = os.getpid()
        with self._write() as connection:
            cursor = connection.execute(
                "INSERT INTO runs (started_at, status, trigger, pid, process, host, policies) VALUES (?,?,?,?,?,?,?)",
                (
                    format_time(now or datetime.now(UTC)),
                    RUNNING,
                    trigger,
                    pid,
                    process_identity(pid),
                    socket.gethostname(),
                    json.dumps(list(policies)),
                ),
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def finish_run(
        self,
        run_id: int,
        status: str,
        result: RunResult | None = None,
        errors: Sequence[str] = (),
        now: datetime | None = None,
    ) -> None:
        """Finalize a run: its status, run-level errors, and one row per volume of `result`. Raises HistoryError."""
        volumes = result.volumes if result else []
        with self._write() as connection:
            row = connection.execute("SELECT started_at FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise HistoryError(f"history {self.path}: run {run_id} does not exist")
            started = parse_time(row[0])
            assert started is not None
            connection.execute(
                "UPDATE runs SET finished_at = ?, status = ?, errors = ?, volume_count = ?, failed_count = ? "
                "WHERE id = ?",
                (
                    format_time(now or datetime.now(UTC)),
                    status,
                    json.dumps([*(result.errors if result else []), *errors]),
                    len(volumes),
                    sum(1 for v in volumes if v.status.value == FAILED),
                    run_id,
                ),
            )
            for volume in volumes:
                self._insert_volume(connection, volume_row_of(run_id, started, volume))

    def note_run(self, run_id: int, warnings: Sequence[str]) -> None:
        """Add `warnings` to a finished run's problems, each prefixed RUN_WARNING: what went wrong after it was
        finalized without failing it (its run record could not be published), its status unchanged. Raises
        HistoryError."""
        with self._write() as connection:
            row = connection.execute("SELECT errors FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise HistoryError(f"history {self.path}: run {run_id} does not exist")
            errors = [*json.loads(row[0]), *(RUN_WARNING + warning for warning in warnings)]
            connection.execute("UPDATE runs SET errors = ? WHERE id = ?", (json.dumps(errors), run_id))

    def mark_crashed(self) -> list[int]:
        """Store `crashed` for rows still `running` whose process is gone; returns their ids."""
        if not self.path.exists():
            return []
        here = socket.gethostname()
        dead = [run.id for run in self.runs(status=RUNNING) if run.effective_status(here) == CRASHED]
        if dead:
            with self._write() as connection:
                why = json.dumps(["the run's process ended before it finished (killed, out of memory, power cut?)"])
                connection.executemany(
                    "UPDATE runs SET status = ?, errors = ? WHERE id = ? AND status = ?",
                    [(CRASHED, why, run_id, RUNNING) for run_id in dead],
                )
        return dead

    def daemon_started(self, schedule: str, jitter_s: float, now: datetime | None = None) -> None:
        pid = os.getpid()
        with self._write() as connection:
            connection.execute(
                "INSERT OR REPLACE INTO daemon (id, pid, process, host, started_at, schedule, jitter_s) "
                "VALUES (1, ?, ?, ?, ?, ?, ?)",
                (
                    pid,
                    process_identity(pid),
                    socket.gethostname(),
                    format_time(now or datetime.now(UTC)),
                    schedule,
                    jitter_s,
                ),
            )

    def daemon_next_run(self, next_run_at: datetime) -> None:
        with self._write() as connection:
            connection.execute(
                "UPDATE daemon SET next_run_at = ? WHERE pid = ?", (format_time(next_run_at), os.getpid())
            )

    def daemon_stopped(self, now: datetime | None = None) -> None:
        with self._write() as connection:
            connection.execute(
                "UPDATE daemon SET stopped_at = ?, next_run_at = NULL WHERE pid = ?",
                (format_time(now or datetime.now(UTC)), os.getpid()),
            )

    # -- reading ------------------------------------------------------------------------------------------

    def runs(
        self, since: datetime | None = None, until: datetime | None = None, status: str | None = None
    ) -> list[RunRow]:
        """Runs that started in [since, until), oldest first."""
        where, parameters = _period(since, until)
        if status:
            where += " AND status = ?"
            parameters.append(status)
        rows = self._read(f"SELECT * FROM runs WHERE {where} ORDER BY started_at, id", parameters)
        return [_from_row(RunRow, row) for row in rows]

    def recent_runs(self, limit: int) -> list[RunRow]:
        """The `limit` latest runs, newest first."""
        rows = self._read("SELECT * FROM runs ORDER BY started_at DESC, id DESC LIMIT ?", [limit])
        return [_from_row(RunRow, row) for row in rows]

    def latest_run(self) -> RunRow | None:
        latest = self.recent_runs(1)
        return latest[0] if latest else None

    def volume_runs(self, since: datetime | None = None, until: datetime | None = None) -> list[VolumeRow]:
        """Volume outcomes of runs that started in [since, until), oldest first."""
        where, parameters = _period(since, until)
        rows = self._read(f"SELECT * FROM volume_runs WHERE {where} ORDER BY started_at, id", parameters)
        return [_from_row(VolumeRow, row) for row in rows]

    def volume_runs_of(self, run_id: int) -> list[VolumeRow]:
        rows = self._read("SELECT * FROM volume_runs WHERE run_id = ? ORDER BY id", [run_id])
        return [_from_row(VolumeRow, row) for row in rows]

    def last_successes(self, until: datetime | None = None) -> dict[tuple[str, str], datetime]:
        """(policy, volume) -> start of its latest run with status ok or warning, before `until`."""
        where, parameters = _period(None, until)
        rows = self._read(
            f"SELECT policy, volume, MAX(started_at) AS at FROM volume_runs WHERE {where} "
            "AND status IN ('ok', 'warning') GROUP BY policy, volume",
            parameters,
        )
        return {(row["policy"], row["volume"]): _required_time(row["at"]) for row in rows}

    def latest_per_volume(self) -> list[VolumeRow]:
        """The most recent outcome of every volume ever recorded, by volume name."""
        rows = self._read(
            "SELECT * FROM volume_runs WHERE id IN (SELECT MAX(id) FROM volume_runs GROUP BY volume) ORDER BY volume",
            [],
        )
        return [_from_row(VolumeRow, row) for row in rows]

    def last_kept_per_volume(self) -> dict[str, VolumeRow]:
        """Each volume's latest outcome that kept an archive (ok or warning), by volume name."""
        rows = self._read(
            "SELECT * FROM volume_runs WHERE id IN (SELECT MAX(id) FROM volume_runs "
            "WHERE status IN ('ok', 'warning') AND archive IS NOT NULL GROUP BY volume)",
            [],
        )
        return {row["volume"]: _from_row(VolumeRow, row) for row in rows}

    def last_archive_size(self, volume: str) -> int | None:
        """The size of the volume's latest archive that was kept (ok or warning), or None: what the next one
        will likely be, for a progress bar's total."""
        rows = self._read(
            "SELECT size FROM volume_runs WHERE volume = ? AND status IN ('ok', 'warning') AND size > 0 "
            "ORDER BY started_at DESC, id DESC LIMIT 1",
            [volume],
        )
        return int(rows[0]["size"]) if rows else None

    def last_success_of(self, volume: str) -> VolumeRow | None:
        """The volume's latest outcome whose archive was kept (ok or warning), or None."""
        rows = self._read(
            "SELECT * FROM volume_runs WHERE volume = ? AND status IN ('ok', 'warning') AND archive IS NOT NULL "
            "ORDER BY started_at DESC, id DESC LIMIT 1",
            [volume],
        )
        return _from_row(VolumeRow, rows[0]) if rows else None

    def record_drill(self, drill: DrillRow) -> int:
        """Store a finished drill (its `id` is ignored); returns its id. Raises HistoryError."""
        with self._write() as connection:
            cursor = connection.execute(
                "INSERT INTO drills (started_at, finished_at, volume, archive, status, trigger, entries, "
                "files_hashed, bytes_hashed, duration_s, problems, target) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    format_time(drill.started_at),
                    format_time(drill.finished_at),
                    drill.volume,
                    drill.archive,
                    drill.status,
                    drill.trigger,
                    drill.entries,
                    drill.files_hashed,
                    drill.bytes_hashed,
                    drill.duration_s,
                    json.dumps(drill.problems),
                    drill.target,
                ),
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def last_drills(self) -> dict[str, DrillRow]:
        """volume -> its last drill: of the latest drill from each target, the newest failed one when any
        failed (a later drill of another target passing must not hide it), else the newest."""
        rows = self._read(
            "SELECT * FROM drills WHERE id IN (SELECT MAX(id) FROM drills GROUP BY volume, COALESCE(target, '')) "
            "ORDER BY id",
            [],
        )
        chosen: dict[str, DrillRow] = {}
        for row in rows:  # oldest first: a later row replaces an earlier one unless that one failed and it did not
            drill = _from_row(DrillRow, row)
            earlier = chosen.get(drill.volume)
            if earlier is None or drill.status != OK or earlier.status == OK:
                chosen[drill.volume] = drill
        return chosen

    def daemon(self) -> DaemonRow | None:
        rows = self._read("SELECT * FROM daemon WHERE id = 1", [])
        return _from_row(DaemonRow, rows[0]) if rows else None

    # -- plumbing -----------------------------------------------------------------------------------------

    @staticmethod
    def _insert_volume(connection: sqlite3.Connection, row: VolumeRow) -> None:
        connection.execute(
            "INSERT INTO volume_runs (run_id, started_at, volume, policy, strategy, status, verdict, warnings, "
            "warning_count, downtime_s, size, duration_s, archive, error, entries, targets) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                row.run_id,
                format_time(row.started_at),
                row.volume,
                row.policy,
                row.strategy,
                row.status,
                row.verdict,
                json.dumps(row.warnings),
                row.warning_count,
                row.downtime_s,
                row.size,
                row.duration_s,
                row.archive,
                row.error,
                row.entries,
                json.dumps(row.targets),
            ),
        )

    @contextmanager
    def _reported(self) -> Iterator[None]:
        """SQLite and file errors become HistoryError, naming the database."""
        try:
            yield
        except (sqlite3.Error, OSError) as error:
            raise HistoryError(f"history {self.path}: {error}") from None

    def _connect(self) -> sqlite3.Connection:
        with self._reported():
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            with self._reported():
                connection.row_factory = sqlite3.Row
                connection.execute("PRAGMA journal_mode = WAL")
                connection.execute("PRAGMA synchronous = FULL")
                connection.execute("PRAGMA foreign_keys = ON")
                _migrate(connection, self.path)
            return connection
        except BaseException:
            connection.close()
            raise

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: committed when the block ends, rolled back on any exception."""
        with closing(self._connect()) as connection, self._reported():
            try:
                connection.execute("BEGIN IMMEDIATE")
                yield connection
                connection.execute("COMMIT")
            except BaseException:
                connection.rollback()
                raise

    def _read(self, query: str, parameters: Sequence[Any]) -> list[sqlite3.Row]:
        if not self.path.exists():  # reading never creates the database
            return []
        with closing(self._connect()) as connection, self._reported():
            return connection.execute(query, parameters).fetchall()


def _migrate(connection: sqlite3.Connection, path: Path) -> None:
    """Bring the file to SCHEMA_VERSION; the version is re-read inside the write lock, so racing runs agree."""
    if connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
        return
    connection.execute("BEGIN IMMEDIATE")
    try:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise HistoryError(
                f"history {path} has schema version {version}, newer than this coord knows ({SCHEMA_VERSION}): "
                "upgrade coord"
            )
        for number in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[number - 1]:
                connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        connection.execute("COMMIT")
    except BaseException:
        connection.rollback()
        raise


def _period(since: datetime | None, until: datetime | None) -> tuple[str, list[Any]]:
    clauses, parameters = ["1 = 1"], []
    if since is not None:
        clauses.append("started_at >= ?")
        parameters.append(format_time(since))
    if until is not None:
        clauses.append("started_at < ?")
        parameters.append(format_time(until))
    return " AND ".join(clauses), parameters


def _required_time(text: str) -> datetime:
    moment = parse_time(text)
    assert moment is not None
    return moment


_TIME_COLUMNS = ("started_at", "finished_at", "next_run_at", "stopped_at")
_JSON_COLUMNS = ("policies", "errors", "warnings", "problems", "targets")
Row = TypeVar("Row", RunRow, VolumeRow, DaemonRow, DrillRow)


def _from_row(kind: type[Row], row: sqlite3.Row) -> Row:
    """A row dataclass from a database row of the same column names, times and JSON decoded."""
    values: dict[str, Any] = {}
    for item in fields(kind):
        value = row[item.name]
        if item.name in _TIME_COLUMNS:
            value = parse_time(value)
        elif item.name in _JSON_COLUMNS:
            value = json.loads(value)
        values[item.name] = value
    return kind(**values)
