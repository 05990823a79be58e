"""A real ClickHouse write workload: chdb (ClickHouse in-process) writing a MergeTree table on a volume.

Runs in the coord-test/chdb image (scripts/build-chdb-image.sh) as

    python3 /workloads/chdb_writer.py --data /data

- The ClickHouse data path is <data>/clickhouse; the table coord.events lives in an Atomic database, so its parts
  land at <data>/clickhouse/store/<3 hex>/<uuid>/<partition>_<min_block>_<max_block>_<level>/.
- Table settings make background merges and the deletion of merged-away parts happen within seconds
  (old_parts_lifetime and the cleanup period default to 1 s here; stock ClickHouse keeps old parts 480 s).
- Batch k (k = 1, 2, ...) inserts the rows with counter values (k-1)*R .. k*R-1 (R = --batch-rows), so after batch
  k the table holds exactly k*R rows, min 0, max k*R-1, all distinct.
- After each committed INSERT a line `<batch> <total_rows_committed> <unix_time>` is appended to <data>/writer.log
  (flushed and fsynced). The log is a lower bound at any instant: a batch is committed shortly before its line is
  written. After a clean stop (SIGTERM/SIGINT: the batch in flight finishes, the session closes, exit 0) the last
  line equals the table's row count.
- With --atomic-log the log is not appended to in place: the whole log is written to <log>.tmp, fsynced and renamed
  over <log>, so that every file on the volume is immutable once it has its final name, like ClickHouse's parts
  (what coord's snapshot strategy relies on; exclude <log>.tmp like ClickHouse's tmp_* directories).
- --backfill-batches N inserts the first N batches back to back (no --interval between them): with
  --partition-rows N*R that gives the table a partition of history, read first, before the partition being written.
- Restarting on the same volume continues where the table ends (next batch and counter), appending to the log.
- SIGUSR1 runs `SYSTEM STOP MERGES coord.events` and SIGUSR2 `SYSTEM START MERGES coord.events` between batches
  (chdb locks its data path, so no other process can send these statements). Once the statement has run, the
  writer creates (STOP) or removes (START) the file /tmp/chdb_writer.merges-stopped, outside the volume, so that a
  hook can wait until merges are really stopped:
  `kill -USR1 1 && until [ -e /tmp/chdb_writer.merges-stopped ]; do sleep 0.05; done`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

TABLE = "coord.events"
MERGES_STOPPED_FLAG = Path("/tmp/chdb_writer.merges-stopped")


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/data", help="the mounted volume (default /data)")
    parser.add_argument("--db-path", help="chdb data path (default <data>/clickhouse)")
    parser.add_argument("--log", help="commit log (default <data>/writer.log)")
    parser.add_argument("--batch-rows", type=int, default=100, help="rows per INSERT (default 100)")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between INSERTs (default 0.1)")
    parser.add_argument(
        "--backfill-batches",
        type=int,
        default=0,
        help="insert the first N batches back to back, without --interval: a table with history",
    )
    parser.add_argument("--batches", type=int, default=0, help="stop after this many batches in total (0: never)")
    parser.add_argument(
        "--partition-rows",
        type=int,
        default=20000,
        help="counter values per partition (default 20000: a new partition every 200 batches)",
    )
    parser.add_argument("--old-parts-lifetime", type=int, default=1, help="seconds (default 1)")
    parser.add_argument(
        "--atomic-log",
        action="store_true",
        help="rewrite the log to <log>.tmp and rename it, instead of appending in place",
    )
    parser.add_argument(
        "--wide-parts",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write Wide parts (one file per column; default) instead of Compact ones",
    )
    return parser.parse_args(argv)


class Writer:
    def __init__(self, arguments: argparse.Namespace) -> None:
        from chdb import session  # imported here so `--help` works without chdb

        self.arguments = arguments
        data = Path(arguments.data)
        self.db_path = Path(arguments.db_path or data / "clickhouse")
        self.log_path = Path(arguments.log or data / "writer.log")
        self.db_path.mkdir(parents=True, exist_ok=True)
        self.session = session.Session(str(self.db_path))
        self.stopping = False
        self.pending: list[str] = []
        self.log_lines = self.log_path.read_text() if arguments.atomic_log and self.log_path.exists() else ""

    def query(self, sql: str, fmt: str = "TabSeparated") -> str:
        return self.session.query(sql, fmt).bytes().decode()

    def create_table(self) -> None:
        a = self.arguments
        self.query("CREATE DATABASE IF NOT EXISTS coord ENGINE = Atomic")
        self.query(
            f"""CREATE TABLE IF NOT EXISTS {TABLE} (
                  counter UInt64,
                  batch UInt32,
                  written_at DateTime64(3) DEFAULT now64(3),
                  payload String
                ) ENGINE = MergeTree
                PARTITION BY intDiv(counter, {int(a.partition_rows)})
                ORDER BY counter
                SETTINGS old_parts_lifetime = {int(a.old_parts_lifetime)},
                         cleanup_delay_period = 1, max_cleanup_delay_period = 1,
                         cleanup_delay_period_random_add = 0,
                         merge_selecting_sleep_ms = 200, max_merge_selecting_sleep_ms = 1000,
                         min_bytes_for_wide_part = {0 if a.wide_parts else 1 << 30}"""
        )

    def resume_point(self) -> tuple[int, int]:
        """(last committed batch, rows) of a table this writer filled before, (0, 0) for a new one."""
        batch, rows = self.query(f"SELECT max(batch), count() FROM {TABLE}").split()
        return int(batch), int(rows)

    def record_commit(self, log, line: str) -> None:
        """Make the commit line durable: appended to the open log, or (--atomic-log) in a new file renamed over it."""
        if not self.arguments.atomic_log:
            log.write(line)
            log.flush()
            os.fsync(log.fileno())
            return
        self.log_lines += line
        scratch = self.log_path.with_name(self.log_path.name + ".tmp")
        with scratch.open("w") as new:
            new.write(self.log_lines)
            new.flush()
            os.fsync(new.fileno())
        os.replace(scratch, self.log_path)

    def run_pending(self) -> None:
        while self.pending:
            statement = self.pending.pop(0)
            self.query(statement)
            if statement.startswith("SYSTEM STOP MERGES"):
                MERGES_STOPPED_FLAG.touch()
            else:
                MERGES_STOPPED_FLAG.unlink(missing_ok=True)
            print(f"chdb_writer: {statement}", file=sys.stderr, flush=True)

    def on_signal(self, signum: int, _frame) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self.stopping = True
        elif signum == signal.SIGUSR1:
            self.pending.append(f"SYSTEM STOP MERGES {TABLE}")
        elif signum == signal.SIGUSR2:
            self.pending.append(f"SYSTEM START MERGES {TABLE}")

    def run(self) -> int:
        a = self.arguments
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(signum, self.on_signal)
        self.create_table()
        batch, rows = self.resume_point()
        table_path = self.query("SELECT data_paths[1] FROM system.tables WHERE database = 'coord' AND name = 'events'")
        print(
            f"chdb_writer: {TABLE} at {table_path.strip()}, resuming after batch {batch} ({rows} rows)",
            file=sys.stderr,
            flush=True,
        )
        with contextlib.nullcontext() if a.atomic_log else self.log_path.open("a") as log:
            while not self.stopping and (a.batches <= 0 or batch < a.batches):
                self.run_pending()
                batch += 1
                first = (batch - 1) * a.batch_rows
                self.query(
                    f"INSERT INTO {TABLE} (counter, batch, payload) "
                    f"SELECT {first} + number, {batch}, randomPrintableASCII(64) FROM numbers({a.batch_rows})"
                )
                rows += a.batch_rows
                self.record_commit(log, f"{batch} {rows} {time.time():.3f}\n")
                if a.interval > 0 and not self.stopping and batch > a.backfill_batches:
                    time.sleep(a.interval)
        self.session.close()
        print(f"chdb_writer: stopped after batch {batch} ({rows} rows)", file=sys.stderr, flush=True)
        return 0


def main(argv: list[str] | None = None) -> int:
    return Writer(parse_arguments(argv)).run()


if __name__ == "__main__":
    sys.exit(main())
