"""A restore killed (SIGKILL) at each step of the swap, then `coord recover` (issue 11, finding 5): the volume holds
exactly the old tree (killed while extracting) or exactly the new one, no staging directory is left, and the
container that uses the volume runs again. The crash points are coord's test-only hook COORD_TEST_CRASH_AT
(coord/restore_swap.py), so each step is hit every time rather than by a timed kill.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from archives import make_archive
from conftest import container_state, run_coord, volume_path
from coord.policy import Compression
from coord.restore_swap import CRASH_AT_VARIABLE, CRASH_POINTS, FAIL_AT_VARIABLE
from trees import differences, snapshot_tree

pytestmark = pytest.mark.docker
pytest_plugins = ["sharedfixtures"]  # source

OLD_ENTRIES = 14  # top-level entries of the old content, as in the issue


def _plant_old_content(root: Path) -> None:
    for index in range(OLD_ENTRIES):
        if index % 2:
            (root / f"old-dir-{index}").mkdir()
            (root / f"old-dir-{index}" / "inside").write_text(f"old {index}\n")
        else:
            (root / f"old-file-{index}").write_text(f"old {index}\n")
    (root / "data").mkdir()  # a name the new tree has too
    (root / "data" / "old-only").write_text("must not survive a completed restore\n")


def _leftovers(root: Path) -> list[str]:
    return sorted(path.name for path in root.iterdir() if path.name.startswith(".coord-restore"))


def _without_root(snapshot: dict[str, tuple]) -> dict[str, tuple]:
    return {name: entry for name, entry in snapshot.items() if name != "."}


@pytest.mark.parametrize(
    ("point", "recovery_crash"), [(p, None) for p in CRASH_POINTS] + [("swap-out-moved", "swap-in-moved")]
)
def test_a_restore_killed_at_any_step_is_completed_or_undone_by_recover(
    tmp_path: Path, source: Path, docker_client, make_volume, make_container, point: str, recovery_crash: str | None
) -> None:
    archive = make_archive(source, tmp_path, Compression.ZSTD, None)
    new = snapshot_tree(source)
    volume = make_volume("crash")
    root = volume_path(docker_client, volume)
    _plant_old_content(root)
    old = snapshot_tree(root)
    user = make_container("user", ["sleep", "3600"], volumes={volume: "/data"})
    common = ["--policies-dir", str(tmp_path / "none")]

    killed = run_coord(
        "restore",
        str(archive),
        "--volume",
        volume,
        "--force",
        "--stop-timeout",
        "1",
        *common,
        env={CRASH_AT_VARIABLE: point},
    )
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert container_state(docker_client, user) == "exited"  # left stopped by the dead run
    assert _leftovers(root), "the crash point was reached before the restore made its directories"

    if recovery_crash is not None:  # recovery itself dies halfway; the next one carries on
        dead = run_coord("recover", env={CRASH_AT_VARIABLE: recovery_crash})
        assert dead.returncode == -signal.SIGKILL, dead.stdout + dead.stderr
    recovered = run_coord("recover", "--json")

    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    report = recovered.json
    assert report["errors"] == []
    assert _leftovers(root) == []
    if point == "extracted":  # the swap had not begun: the old tree, untouched (the root's mtime aside)
        assert differences(_without_root(old), _without_root(snapshot_tree(root))) == []
        assert any("kept its old content" in line for line in report["removed_partials"])
    else:
        assert differences(new, snapshot_tree(root)) == []
        assert any("completed the restore" in line for line in report["removed_partials"])
    assert container_state(docker_client, user) == "running"


def test_a_swap_that_fails_while_coord_lives_keeps_the_containers_down_until_recover(
    tmp_path: Path, source: Path, docker_client, make_volume, make_container
) -> None:
    archive = make_archive(source, tmp_path, Compression.ZSTD, None)
    new = snapshot_tree(source)
    volume = make_volume("broken-swap")
    root = volume_path(docker_client, volume)
    _plant_old_content(root)
    user = make_container("user", ["sleep", "3600"], volumes={volume: "/data"})
    failed = run_coord(
        "restore",
        str(archive),
        "--volume",
        volume,
        "--force",
        "--stop-timeout",
        "1",
        "--policies-dir",
        str(tmp_path / "none"),
        env={FAIL_AT_VARIABLE: "swap-in-moved"},
    )
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "failed halfway (" in failed.stderr and "its containers stay stopped" in failed.stderr
    assert "Traceback" not in failed.stderr
    # Half of each tree is in the volume: the database must not start on it.
    assert container_state(docker_client, user) == "exited"

    recovered = run_coord("recover", "--json")
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert any("completed the restore" in line for line in recovered.json["removed_partials"])
    assert any(user.name in line and "started" in line for line in recovered.json["restored"])
    assert differences(new, snapshot_tree(root)) == []
    assert _leftovers(root) == []
    assert container_state(docker_client, user) == "running"
