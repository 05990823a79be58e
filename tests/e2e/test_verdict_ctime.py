"""The verdict of a read that is not one instant (issue 11, finding 6), against the real Docker engine and GNU tar.

The two-counter writer: a container rewrites `a.dat`, then `z.dat`, in place (same size, same inode) with a
counter, while a large filler lies between them in tar's order, so the read takes a while. No name changes and
tar, done with `a.dat` before it is rewritten, says nothing: before the ctime check the archive held a=1669 beside
z=7636 and the verdict was `consistent`. The snapshot variant also puts each file's mtime back (`touch -d`), which
hid the in-place writes from the old mtime check.
"""

import os
from pathlib import Path

import pytest
from tests.conftest import run_coord, volume_path, wait_for, write_policy

pytestmark = pytest.mark.docker

FILLER_MB = 128
# In place (dd conv=notrunc of 8 bytes into an 8-byte file); with RESET the mtime is put back after each write.
TWO_COUNTERS = """
i=0
while :; do
  i=$((i + 1))
  for f in a.dat z.dat; do
    printf %08d "$i" | dd of=/data/$f conv=notrunc 2>/dev/null
    [ -z "$RESET" ] || touch -d '2020-01-01 00:00:00' /data/$f
  done
done
"""


def fill_volume(mount: Path) -> None:
    for name in ("a.dat", "z.dat"):
        (mount / name).write_bytes(b"00000000")
    with open(mount / "m.filler", "wb") as handle:  # between a.dat and z.dat in tar's (sorted) order
        for _ in range(FILLER_MB):
            handle.write(os.urandom(1 << 20))


def back_up(tmp_path: Path, volume: str, strategy: str) -> dict:
    write_policy(tmp_path / "policies", "two", f"volumes: [{volume}]\nstrategy: {strategy}\n")
    run = run_coord(
        "backup", "--policies-dir", str(tmp_path / "policies"), "--dest", str(tmp_path / "backups"), "--json"
    )
    assert run.returncode == 0, run.stderr
    [entry] = run.json["volumes"]
    return entry


def start_two_counters(docker_client, make_volume, make_container, *, reset_mtime: bool) -> tuple[str, Path]:
    volume = make_volume("counters")
    mount = volume_path(docker_client, volume)
    fill_volume(mount)
    environment = {"RESET": "1"} if reset_mtime else {}
    make_container("writer", ["sh", "-c", TWO_COUNTERS], {volume: "/data"}, environment=environment)
    wait_for(lambda: (mount / "z.dat").read_bytes() >= b"00000010", what="the writer's first rounds")
    return volume, mount


def test_a_live_read_of_the_two_counter_writer_is_not_consistent(
    docker_client, make_volume, make_container, tmp_path: Path
) -> None:
    volume, _ = start_two_counters(docker_client, make_volume, make_container, reset_mtime=False)
    entry = back_up(tmp_path, volume, "live")
    assert entry["status"] == "warning", entry
    assert entry["verdict"] == "fuzzy", entry
    [reason] = [r for r in entry["verdict_reasons"] if "modified during the read" in r]
    assert reason.split(" ")[0].isdigit() and ("e.g. a.dat" in reason or "e.g. z.dat" in reason), reason


def test_a_snapshot_read_with_the_mtime_put_back_is_at_risk(
    docker_client, make_volume, make_container, tmp_path: Path
) -> None:
    volume, mount = start_two_counters(docker_client, make_volume, make_container, reset_mtime=True)
    # Between its writes the mtime says nothing happened since 2020.
    wait_for(lambda: (mount / "a.dat").stat().st_mtime < 1_600_000_000, what="a.dat's mtime put back")
    entry = back_up(tmp_path, volume, "snapshot")
    assert entry["verdict"] == "at-risk", entry
    [reason] = [r for r in entry["verdict_reasons"] if "modified in place after the snapshot" in r]
    assert reason.startswith("2 file(s)") and "(e.g. a.dat)" in reason, reason
    assert not list(mount.glob(".coord-snapshot-*"))


@pytest.mark.parametrize("strategy", ["live", "snapshot", "pause"])
def test_a_quiet_volume_stays_consistent(
    docker_client, make_volume, make_container, tmp_path: Path, strategy: str
) -> None:
    """The ctime check must not fire on every run: files written before the backup, a container that only sleeps."""
    volume = make_volume("quiet")
    fill_volume(volume_path(docker_client, volume))
    make_container("idle", ["sleep", "600"], {volume: "/data"})
    entry = back_up(tmp_path, volume, strategy)
    assert (entry["status"], entry["verdict"], entry["verdict_reasons"]) == ("ok", "consistent", []), entry
