"""Open a (restored) chdb data directory and report what coord.events holds, as one JSON line on stdout.

    python3 /workloads/chdb_check.py --data /data
    {"rows": N, "min": a, "max": b, "distinct": d, "batches": k, "active_parts": p, "partitions": q}

`min`/`max` are null for an empty table. When the directory cannot be opened or the table is missing or unreadable,
prints {"error": "..."} and exits 1. The writer (chdb_writer.py) must not be running on the same path: chdb takes
an exclusive lock on <db-path>/status, and a second process fails with "Cannot lock file ... status".
"""

from __future__ import annotations

import argparse
import fcntl
import json
import sys
from pathlib import Path

TABLE = "coord.events"


def lock_holder(status: Path) -> str | None:
    """What holds ClickHouse's exclusive flock on <db-path>/status, or None when nothing does.

    chdb itself only reports "Error initializing EmbeddedServer" in that case; this names the cause. A status file
    left behind by a killed process is not locked and does not stop a new session.
    """
    try:
        with status.open("rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return " ".join(handle.read().decode(errors="replace").split()[:2]) or "status file locked"
            fcntl.flock(handle, fcntl.LOCK_UN)
    except FileNotFoundError:
        pass
    return None


def check(db_path: Path) -> dict:
    from chdb import session

    if not (db_path / "metadata").is_dir():
        return {"error": f"{db_path} holds no ClickHouse data (no metadata/ directory)"}
    holder = lock_holder(db_path / "status")
    if holder is not None:
        return {"error": f"{db_path} is in use by another ClickHouse/chdb process ({holder})"}
    connection = session.Session(str(db_path))
    try:
        found = (
            connection.query(
                "SELECT count() FROM system.tables WHERE database = 'coord' AND name = 'events'", "TabSeparated"
            )
            .bytes()
            .decode()
            .strip()
        )
        if found != "1":
            return {"error": f"table {TABLE} not found in {db_path}"}
        result = json.loads(
            connection.query(
                f"""SELECT count() AS rows, min(counter) AS min, max(counter) AS max,
                           uniqExact(counter) AS distinct, uniqExact(batch) AS batches
                    FROM {TABLE}""",
                "JSONEachRow",
            )
            .bytes()
            .decode()
        )
        parts = json.loads(
            connection.query(
                """SELECT count() AS active_parts, uniqExact(partition_id) AS partitions
                    FROM system.parts WHERE database = 'coord' AND table = 'events' AND active""",
                "JSONEachRow",
            )
            .bytes()
            .decode()
        )
    finally:
        connection.close()
    report = {key: int(value) for key, value in {**result, **parts}.items()}
    if report["rows"] == 0:
        report["min"] = report["max"] = None
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/data", help="the volume (default /data)")
    parser.add_argument("--db-path", help="chdb data path (default <data>/clickhouse)")
    arguments = parser.parse_args(argv)
    db_path = Path(arguments.db_path or Path(arguments.data) / "clickhouse")
    try:
        report = check(db_path)
    except Exception as error:  # any failure to read the data is the answer, as JSON
        report = {"error": f"{type(error).__name__}: {error}".strip()}
    print(json.dumps(report), flush=True)
    return 1 if "error" in report else 0


if __name__ == "__main__":
    sys.exit(main())
