"""The snapshot in two steps: linked while the containers run, made current while they are paused.

Real files, real `cp`, on this machine's file system (ext4 here: hard links). The invariant: after
complete_snapshot, the snapshot is what a `cp -a --link` taken at that moment gives: the same names, each
non-directory the live entry's inode, each directory with the live one's owner, mode and modification time.
"""

import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from coord.snapshot import (
    SNAPSHOT_PREFIX,
    CloneMethod,
    SnapshotError,
    complete_snapshot,
    new_snapshot_path,
    prepare_snapshot,
)


def signature(root: Path, *, skip_snapshots: bool = False) -> dict[str, tuple]:
    """Everything the archive of `root` depends on that a hard-link copy can get wrong."""
    found: dict[str, tuple] = {}
    for directory, subdirectories, files in os.walk(root):
        if skip_snapshots and Path(directory) == root:
            subdirectories[:] = [d for d in subdirectories if not d.startswith(SNAPSHOT_PREFIX)]
        relative = os.path.relpath(directory, root)
        status = os.lstat(directory)
        if relative != ".":
            found[relative] = ("dir", status.st_mode, status.st_uid, status.st_gid, status.st_mtime_ns)
        for name in [*files, *[d for d in subdirectories if os.path.islink(os.path.join(directory, d))]]:
            path = os.path.join(directory, name)
            found[os.path.relpath(path, root)] = ("inode", os.lstat(path).st_ino)
    return found


def make_volume(root: Path) -> None:
    for table in ("t1", "t2"):
        for part in range(30):
            directory = root / "store" / table / f"all_{part}_{part}_0"
            directory.mkdir(parents=True)
            for column in range(4):
                (directory / f"c{column}.bin").write_bytes(os.urandom(64))
        (root / "store" / table / "format_version.txt").write_text("1")
    (root / "metadata").mkdir()
    (root / "metadata" / "db.sql").write_text("ATTACH DATABASE db")


def test_changes_made_between_the_two_steps_are_all_in_the_snapshot(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    make_volume(volume)
    snapshot = prepare_snapshot(volume, new_snapshot_path(volume))
    assert snapshot.method is CloneMethod.HARDLINK  # ext4 on this machine: the two-step path
    assert signature(snapshot.path) == signature(volume, skip_snapshots=True)  # step 1 alone, on a quiet tree

    # What a running database does meanwhile: a merge writes a new part and removes its sources, an INSERT adds a
    # part, a file is replaced by rename, one is rewritten in place, a directory changes owner and mode, an entry
    # changes type, a symlink appears.
    merged = volume / "store/t1/all_0_1_1"
    merged.mkdir()
    (merged / "c0.bin").write_bytes(b"merged")
    shutil.rmtree(volume / "store/t1/all_0_0_0")
    shutil.rmtree(volume / "store/t1/all_1_1_0")
    (volume / "store/t2/all_99_99_0").mkdir()
    (volume / "store/t2/all_99_99_0/c0.bin").write_bytes(b"new")
    (volume / "metadata/db.sql.tmp").write_text("ATTACH DATABASE db -- v2")
    os.replace(volume / "metadata/db.sql.tmp", volume / "metadata/db.sql")
    with open(volume / "store/t2/format_version.txt", "a") as handle:
        handle.write("\n")
    os.chown(volume / "store/t2/all_5_5_0", 1234, 5678)
    os.chmod(volume / "store/t2/all_5_5_0", 0o750)
    (volume / "store/t2/all_6_6_0/c0.bin").unlink()
    (volume / "store/t2/all_6_6_0/c0.bin").mkdir()  # a file became a directory
    shutil.rmtree(volume / "store/t2/all_7_7_0")
    (volume / "store/t2/all_7_7_0").write_text("a directory became a file")
    (volume / "latest").symlink_to("store/t1/all_0_1_1")

    counts = complete_snapshot(volume, snapshot)
    assert signature(snapshot.path) == signature(volume, skip_snapshots=True)
    assert (snapshot.path / "store/t2/format_version.txt").read_text() == "1\n"  # the shared inode: in place
    assert (snapshot.path / "metadata/db.sql").read_text().endswith("v2")
    assert os.readlink(snapshot.path / "latest") == "store/t1/all_0_1_1"
    assert counts.linked >= 3 and counts.removed >= 4 and counts.copied_directories >= 3
    root_status, snapshot_status = os.lstat(volume), os.lstat(snapshot.path)
    assert (root_status.st_mode, root_status.st_uid) == (snapshot_status.st_mode, snapshot_status.st_uid)


def test_a_tree_changing_while_it_is_linked_is_made_exact_while_paused(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    make_volume(volume)
    for index in range(2000):  # enough for cp to still be linking while the churn runs
        (volume / "metadata" / f"f{index}").write_text("x")
    stop = threading.Event()

    def churn() -> None:
        index = 0
        while not stop.is_set():
            part = volume / "store/t1" / f"all_{1000 + index}_{1000 + index}_0"
            part.mkdir()
            (part / "c0.bin").write_bytes(b"x")
            old = volume / "store/t1" / f"all_{999 + index}_{999 + index}_0"
            if old.exists():
                shutil.rmtree(old)
            (volume / "metadata" / f"f{index % 2000}").unlink(missing_ok=True)
            index += 1

    writer = threading.Thread(target=churn)
    writer.start()
    try:
        snapshot = prepare_snapshot(volume, new_snapshot_path(volume))  # must not fail on vanished files
    finally:
        stop.set()
        writer.join()
    complete_snapshot(volume, snapshot)  # the "pause": nothing writes now
    assert signature(snapshot.path) == signature(volume, skip_snapshots=True)


@pytest.fixture
def inner_filesystem(tmp_path: Path):
    volume = tmp_path / "volume"
    make_volume(volume)
    mount_point = volume / "mounted"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], check=True)
    (mount_point / "elsewhere.bin").write_text("on another file system")
    yield volume
    subprocess.run(["umount", str(mount_point)], check=True)


def test_a_volume_spanning_file_systems_is_refused_before_any_pause(inner_filesystem: Path) -> None:
    path = new_snapshot_path(inner_filesystem)
    with pytest.raises(SnapshotError, match=r"another file system.*use strategy pause or stop"):
        prepare_snapshot(inner_filesystem, path)
    assert not path.exists()


def test_a_file_system_appearing_between_the_steps_fails_the_snapshot_and_removes_it(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    make_volume(volume)
    snapshot = prepare_snapshot(volume, new_snapshot_path(volume))
    mount_point = volume / "store/t1/all_3_3_0"
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], check=True)
    try:
        (mount_point / "x.bin").write_text("x")
        with pytest.raises(SnapshotError):
            complete_snapshot(volume, snapshot)
        assert not snapshot.path.exists()
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)
