"""Link-safe helpers on real files: what a container can plant at a name coord uses is never followed."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from pathlib import Path

import pytest

from coord.fsutil import (
    NotOurs,
    create_file_at,
    descriptor_path,
    format_identity,
    lstat_beneath,
    make_directory_at,
    open_directory,
    open_directory_at,
    opened,
    parse_identity,
    remove_directory,
    remove_directory_at,
)
from coord.snapshot import SnapshotError, detect_clone_method, new_snapshot_path, prepare_snapshot, remove_snapshot


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A host directory outside the 'volume', with a file and a subdirectory a link may point at."""
    directory = tmp_path / "host"
    (directory / "etc").mkdir(parents=True)
    (directory / "etc" / "shadow").write_text("root:secret\n")
    return directory


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    root = tmp_path / "volume"
    root.mkdir()
    return root


def test_a_file_is_never_created_through_a_link_at_its_name(volume: Path, outside: Path) -> None:
    target = outside / "etc" / "shadow"
    before = digest(target)
    (volume / "probe").symlink_to(target)
    with _opened(volume) as fd:
        with pytest.raises(FileExistsError):
            create_file_at(fd, "probe")
        with pytest.raises(FileExistsError):
            make_directory_at(fd, "probe")
    assert digest(target) == before
    assert os.readlink(volume / "probe") == str(target)


def test_a_directory_link_is_not_opened(volume: Path, outside: Path) -> None:
    (volume / "dir").symlink_to(outside / "etc")
    with _opened(volume) as fd:
        with pytest.raises(OSError) as refused:
            open_directory_at(fd, "dir")
        assert refused.value.errno in (errno.ELOOP, errno.ENOTDIR)
        assert lstat_beneath(fd, "dir/shadow") is None  # not looked up through the link
    with pytest.raises(OSError):
        open_directory(volume / "dir")


def test_removal_refuses_a_link_planted_at_the_name(volume: Path, outside: Path) -> None:
    with _opened(volume) as fd:
        made, identity = make_directory_at(fd, "snap")
        os.close(made)
        os.rename("snap", "moved", src_dir_fd=fd, dst_dir_fd=fd)
        os.symlink(str(outside / "etc"), "snap", dir_fd=fd)
        with pytest.raises(NotOurs, match="symbolic link"):
            remove_directory_at(fd, "snap", identity)
    assert (outside / "etc" / "shadow").read_text() == "root:secret\n"
    assert (volume / "snap").is_symlink() and (volume / "moved").is_dir()


def test_removal_refuses_a_directory_whose_identity_differs(volume: Path) -> None:
    with _opened(volume) as fd:
        made, identity = make_directory_at(fd, "snap")
        os.close(made)
        os.rename("snap", "ours", src_dir_fd=fd, dst_dir_fd=fd)
        os.mkdir("snap", dir_fd=fd)
        (volume / "snap" / "their-data").write_text("keep me")
        with pytest.raises(NotOurs, match="another inode"):
            remove_directory_at(fd, "snap", identity)
        assert (volume / "snap" / "their-data").read_text() == "keep me"
        remove_directory_at(fd, "ours", identity)  # the one coord made, wherever it is named now
    assert not (volume / "ours").exists()


def test_a_subdirectory_swapped_for_a_link_before_removal_is_unlinked_not_followed(volume: Path, outside: Path) -> None:
    before = sorted(os.listdir(outside / "etc"))
    with _opened(volume) as fd:
        made, identity = make_directory_at(fd, "snap")
        try:
            os.mkdir("sub", dir_fd=made)
            (volume / "snap" / "sub" / "file").write_text("x")
            # what a container does between coord's listing and its open: the directory becomes a link
            os.unlink(volume / "snap" / "sub" / "file")
            os.rmdir(volume / "snap" / "sub")
            os.symlink(str(outside / "etc"), volume / "snap" / "sub")
            (volume / "snap" / "link-to-file").symlink_to(outside / "etc" / "shadow")
        finally:
            os.close(made)
        remove_directory_at(fd, "snap", identity)
    assert not (volume / "snap").exists()
    assert sorted(os.listdir(outside / "etc")) == before
    assert (outside / "etc" / "shadow").read_text() == "root:secret\n"


def test_remove_directory_by_path_and_nothing_there(volume: Path) -> None:
    with _opened(volume) as fd:
        made, identity = make_directory_at(fd, "snap")
        os.close(made)
    (volume / "snap" / "deep" / "er").mkdir(parents=True)
    remove_directory(volume / "snap", identity)
    assert not (volume / "snap").exists()
    with pytest.raises(FileNotFoundError):
        remove_directory(volume / "snap", identity)


def test_identity_round_trip_and_descriptor_path(volume: Path) -> None:
    assert parse_identity(format_identity((66305, 1234))) == (66305, 1234)
    assert parse_identity("") is None and parse_identity("x:1") is None
    (volume / "inside").write_text("seen through the descriptor")
    with _opened(volume) as fd:
        os.rename(volume, volume.with_name("renamed"))
        os.symlink("/", volume)  # whatever is at the old path now
        assert (descriptor_path(fd) / "inside").read_text() == "seen through the descriptor"


def test_snapshot_removal_leaves_a_planted_link_alone(volume: Path, outside: Path) -> None:
    path = new_snapshot_path(volume)
    path.symlink_to(outside / "etc")
    with pytest.raises(NotOurs):
        remove_snapshot(path, None)  # no identity: coord cannot prove it made this
    with pytest.raises(NotOurs):
        remove_snapshot(path, (os.stat(outside / "etc").st_dev, os.stat(outside / "etc").st_ino))
    assert path.is_symlink() and (outside / "etc" / "shadow").exists()
    path.unlink()
    assert remove_snapshot(path, None) is False  # nothing there


def test_a_snapshot_name_taken_already_is_refused_and_left_alone(volume: Path, outside: Path) -> None:
    path = new_snapshot_path(volume)
    path.symlink_to(outside / "etc")
    with pytest.raises(SnapshotError, match="File exists"):
        prepare_snapshot(volume, path)
    assert path.is_symlink() and sorted(os.listdir(outside / "etc")) == ["shadow"]


def test_the_reflink_probe_leaves_nothing_behind(volume: Path) -> None:
    with _opened(volume) as fd:
        detect_clone_method(fd)
    assert os.listdir(volume) == []


def _opened(path: Path) -> contextlib.AbstractContextManager[int]:
    return opened(open_directory(path))
