"""Smoke test of the ClickHouse workload image: chdb writing MergeTree parts on a Docker volume.

The image is built by scripts/build-chdb-image.sh when its recipe digest has no image yet (from scratch this
includes the Debian base image: a few minutes; see docs/images.md). With the image present the test takes ~20 s.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from conftest import volume_path

pytestmark = pytest.mark.docker

PART_NAME = re.compile(r"^(?P<partition>[0-9a-f]+)_(?P<min>\d+)_(?P<max>\d+)_(?P<level>\d+)$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def test_dockerfile_from_the_base_image_builds_and_runs_python(docker_client, chdb_image, unique, tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM coord-base/debian:bookworm\nRUN python3 --version\n")
    tag = f"{unique('base-check')}:latest"
    try:
        completed = subprocess.run(
            ["docker", "build", "--force-rm", "-t", tag, str(tmp_path)], capture_output=True, text=True, timeout=300
        )
        assert completed.returncode == 0, completed.stderr
        assert "Python 3.11" in completed.stdout, completed.stdout
    finally:
        subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True)


def test_chdb_image_keeps_no_host_pip_settings(chdb_image, make_container):
    """The host's CA bundle and pip.conf are used in the build stage only, never shipped in the image."""
    script = "test ! -e /tmp/host-pip && test -z \"$PIP_CONFIG_FILE\" && python3 -c 'import chdb'"
    probe = make_container("chdb-probe", ["sh", "-c", script], image=chdb_image)
    assert probe.wait(timeout=60)["StatusCode"] == 0, probe.logs().decode(errors="replace")


def table_directory(data: Path) -> Path | None:
    """store/<3 hex>/<uuid>/ of the one MergeTree table (the directory holding format_version.txt)."""
    found = sorted((data / "clickhouse" / "store").glob("*/*/format_version.txt"))
    return found[0].parent if found else None


def part_names(table: Path) -> set[str]:
    try:
        return {entry.name for entry in table.iterdir() if PART_NAME.match(entry.name)}
    except FileNotFoundError:
        return set()


def last_commit(log: Path) -> tuple[int, int]:
    batch, rows, _ = log.read_text().splitlines()[-1].split()
    return int(batch), int(rows)


def test_chdb_writer_merges_and_check_counts_every_committed_row(
    docker_client, chdb_image, make_volume, make_container
):
    volume = make_volume("chdb")
    data = volume_path(docker_client, volume)
    writer = make_container(
        "chdb-writer", ["python3", "/workloads/chdb_writer.py", "--data", "/data"], {volume: "/data"}, image=chdb_image
    )

    # Watch the volume from the host as root: parts appear, get merged into higher levels, and the merged-away
    # parts are deleted (old_parts_lifetime=1 s), all while the writer keeps inserting.
    seen: set[str] = set()
    merged = deleted = False
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline and not (merged and deleted):
        table = table_directory(data)
        if table is not None:
            current = part_names(table)
            merged = merged or any(int(PART_NAME.match(name)["level"]) > 0 for name in current)
            deleted = deleted or bool(seen - current)
            seen |= current
        writer.reload()
        assert writer.status == "running", writer.logs().decode(errors="replace")[-2000:]
        time.sleep(0.1)
    assert merged, f"no merged part (level > 0) appeared; parts seen: {sorted(seen)}"
    assert deleted, f"no part was deleted after a merge; parts seen: {sorted(seen)}"

    # The layout coord's ClickHouse policies are written against: store/<first 3 hex of uuid>/<uuid>/<part>.
    table = table_directory(data)
    assert UUID.match(table.name) and table.parent.name == table.name[:3], table
    assert (data / "clickhouse" / "metadata").is_dir()

    writer.stop(timeout=30)
    writer.reload()
    assert writer.attrs["State"]["ExitCode"] == 0, writer.logs().decode(errors="replace")[-2000:]
    batch, rows = last_commit(data / "writer.log")
    assert batch > 0 and rows == batch * 100

    checker = make_container(
        "chdb-check", ["python3", "/workloads/chdb_check.py", "--data", "/data"], {volume: "/data"}, image=chdb_image
    )
    exit_status = checker.wait(timeout=120)["StatusCode"]
    output = checker.logs(stdout=True, stderr=False).decode()
    assert exit_status == 0, checker.logs().decode(errors="replace")
    report = json.loads(output.strip().splitlines()[-1])
    assert report["rows"] == rows, report
    assert (report["min"], report["max"], report["distinct"], report["batches"]) == (0, rows - 1, rows, batch), report
