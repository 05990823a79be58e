"""`coord restore --target-dir` on real archives (no Docker): the exact tree back from plain and encrypted
archives; wrong passphrase and missing key fail clearly and write nothing; crafted malicious archives are refused
whole, with nothing written inside or outside the target; --dry-run, --force, corrupt archives.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from archives import encryption_of, make_archive
from conftest import run_coord
from coord.policy import Compression
from trees import SPARSE_SIZE, differences, populate_attributes, populate_links, snapshot_tree

if TYPE_CHECKING:
    from sharedfixtures import ThrowawayKey

pytest_plugins = ["sharedfixtures"]  # throwaway_key, state_dir, empty_gpg_home, passphrase_file, source


@pytest.mark.parametrize(
    ("kind", "compression"),
    [
        ("none", Compression.ZSTD),
        ("none", Compression.GZIP),
        ("passphrase", Compression.ZSTD),
        ("public-key", Compression.GZIP),
    ],
)
def test_coord_restore_gives_back_the_exact_tree(
    tmp_path: Path,
    source: Path,
    passphrase_file: Path,
    throwaway_key: ThrowawayKey,
    state_dir: Path,
    kind: str,
    compression: Compression,
) -> None:
    encryption = None if kind == "none" else encryption_of(kind, throwaway_key, passphrase_file, state_dir)
    archive = make_archive(source, tmp_path, compression, encryption)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([archive.name, "source", "passphrase"])
    expected = snapshot_tree(source)

    secret: list[str] = []
    if kind == "passphrase":
        secret = ["--passphrase-file", str(passphrase_file)]
    elif kind == "public-key":
        secret = ["--gpg-home", str(throwaway_key.home)]
    restored = run_coord(
        "restore",
        str(archive),
        "--target-dir",
        str(tmp_path / "by-coord"),
        *secret,
        "--state-dir",
        str(state_dir),
        "--policies-dir",
        str(tmp_path / "none"),
    )
    assert restored.returncode == 0, restored.stderr
    assert differences(expected, snapshot_tree(tmp_path / "by-coord")) == []


def test_wrong_passphrase_and_missing_key_fail_clearly_and_write_nothing(
    tmp_path: Path,
    source: Path,
    passphrase_file: Path,
    throwaway_key: ThrowawayKey,
    state_dir: Path,
    empty_gpg_home: Path,
) -> None:
    symmetric = make_archive(
        source, tmp_path, Compression.ZSTD, encryption_of("passphrase", throwaway_key, passphrase_file, state_dir)
    )
    wrong = tmp_path / "wrong"
    wrong.write_text("not the passphrase\n")
    common = ["--state-dir", str(state_dir), "--policies-dir", str(tmp_path / "none")]
    target = tmp_path / "target"

    result = run_coord("restore", str(symmetric), "--target-dir", str(target), "--passphrase-file", str(wrong), *common)
    assert result.returncode == 1
    assert "wrong passphrase" in result.stderr and "Traceback" not in result.stderr
    assert not target.exists()

    result = run_coord(
        "restore", str(symmetric), "--target-dir", str(target), "--gpg-home", str(empty_gpg_home), *common
    )
    assert result.returncode == 1
    assert "encrypted with a passphrase: pass --passphrase-file" in result.stderr
    assert not target.exists()

    keyed_dir = tmp_path / "keyed"
    keyed_dir.mkdir()
    keyed = make_archive(
        source, keyed_dir, Compression.ZSTD, encryption_of("public-key", throwaway_key, passphrase_file, state_dir)
    )
    result = run_coord("restore", str(keyed), "--target-dir", str(target), "--gpg-home", str(empty_gpg_home), *common)
    assert result.returncode == 1
    assert "no secret key for it in " + str(empty_gpg_home) in result.stderr
    assert "pass --gpg-home DIR with the secret key" in result.stderr
    assert not target.exists()


# ---------------------------------------------------------------------------------------------------------------
# Malicious archives


def _member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "", **fields: int) -> tuple:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o644
    info.mtime = 1_600_000_000
    for key, value in fields.items():
        setattr(info, key, value)
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, (io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def craft_archive(path: Path, members: list[tuple]) -> Path:
    """A .tar.zst holding exactly `members`, written by Python's tarfile (coord would never write these)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as writer:
        for info, data in members:
            writer.addfile(info, data)
    path.write_bytes(
        subprocess.run(["zstd", "-q", "-c"], input=buffer.getvalue(), capture_output=True, check=True).stdout
    )
    return path


def malicious_cases(outside: Path) -> dict[str, list[tuple]]:
    fine = _member("./fine.txt", data=b"harmless, and must not be written either\n")
    return {
        "traversal": [fine, _member("./../escaped.txt", data=b"pwned")],
        "deep traversal": [fine, _member("./a/../../escaped.txt", data=b"pwned")],
        "absolute path": [fine, _member(str(outside / "absolute.txt"), data=b"pwned")],
        "absolute symlink and write through it": [
            fine,
            _member("./evil", tarfile.SYMTYPE, link=str(outside)),
            _member("./evil/through.txt", data=b"pwned"),
        ],
        "relative escaping symlink and write through it": [
            fine,
            _member("./up", tarfile.SYMTYPE, link="../outside"),
            _member("./up/victim", data=b"pwned"),
        ],
        "hardlink through an escaping symlink": [
            fine,
            _member("./up", tarfile.SYMTYPE, link="../outside"),
            _member("./hard", tarfile.LNKTYPE, link="up/victim"),
        ],
        "absolute hardlink": [fine, _member("./hard", tarfile.LNKTYPE, link=str(outside / "victim"))],
        "escaping hardlink": [fine, _member("./hard", tarfile.LNKTYPE, link="../outside/victim")],
        "device node": [fine, _member("./null", tarfile.CHRTYPE, devmajor=1, devminor=3)],
        "fifo": [fine, _member("./pipe", tarfile.FIFOTYPE)],
    }


def _files_under(directory: Path) -> dict[str, tuple[int, int, bytes]]:
    found = {}
    for path in sorted(directory.rglob("*")):
        info = path.lstat()
        content = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
        found[str(path)] = (info.st_mode, info.st_nlink, content)
    return found


@pytest.mark.parametrize("case", list(malicious_cases(Path("/x"))))
def test_malicious_archives_are_refused_and_nothing_is_written(tmp_path: Path, case: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("precious\n")
    archive = craft_archive(tmp_path / "crafted.tar.zst", malicious_cases(outside)[case])
    target = tmp_path / "target"
    before = _files_under(tmp_path)

    result = run_coord("restore", str(archive), "--target-dir", str(target), "--policies-dir", str(tmp_path / "none"))

    assert result.returncode == 1, result.stdout + result.stderr
    assert "refusing to restore" in result.stderr and "nothing was written" in result.stderr
    assert _files_under(tmp_path) == before  # nothing new anywhere: not in the target, not beside it, not outside
    assert not target.exists()


def test_a_dry_run_lists_members_and_writes_nothing(tmp_path: Path, source: Path) -> None:
    archive = make_archive(source, tmp_path, Compression.ZSTD, None)
    target = tmp_path / "target"
    result = run_coord(
        "restore", str(archive), "--target-dir", str(target), "--dry-run", "--policies-dir", str(tmp_path / "none")
    )
    assert result.returncode == 0, result.stderr
    assert "-rwsr-xr-x 0/0" in result.stdout and "setuid-tool" in result.stdout
    assert "lrwxrwxrwx 999/999" in result.stdout and "link-to-file -> data/file.txt" in result.stdout
    assert "would be created" in result.stdout
    assert not target.exists()


def test_a_non_empty_target_needs_force_which_replaces_its_content(tmp_path: Path, source: Path) -> None:
    archive = make_archive(source, tmp_path, Compression.ZSTD, None)
    target = tmp_path / "target"
    target.mkdir()
    (target / "old-file").write_text("from before")
    common = ["--target-dir", str(target), "--policies-dir", str(tmp_path / "none")]

    refused = run_coord("restore", str(archive), *common)
    assert refused.returncode == 2 and "pass --force" in refused.stderr
    assert [p.name for p in target.iterdir()] == ["old-file"]

    # A dry run says what a forced restore would replace instead of refusing, and changes nothing either.
    dry = run_coord("restore", str(archive), *common, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would replace (top-level entries of {target}): old-file" in dry.stdout
    assert "pass --force to replace its content" in dry.stdout
    assert [p.name for p in target.iterdir()] == ["old-file"]

    forced = run_coord("restore", str(archive), *common, "--force")
    assert forced.returncode == 0, forced.stderr
    assert differences(snapshot_tree(source), snapshot_tree(target)) == []


def test_a_corrupt_archive_is_refused_and_the_old_content_stays(tmp_path: Path, source: Path) -> None:
    archive = make_archive(source, tmp_path, Compression.ZSTD, None)
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    target = tmp_path / "target"
    target.mkdir()
    (target / "old-file").write_text("from before")
    result = run_coord(
        "restore", str(archive), "--target-dir", str(target), "--force", "--policies-dir", str(tmp_path / "none")
    )
    assert result.returncode == 1
    assert "cannot read" in result.stderr and "decompression failed" in result.stderr
    assert [p.name for p in target.iterdir()] == ["old-file"]


# ---------------------------------------------------------------------------------------------------------------
# Links pointing anywhere (issue 11, finding 7) and attributes only a pax archive keeps (finding 8)


def test_links_pointing_outside_or_in_loops_are_restored_as_links(tmp_path: Path, source: Path) -> None:
    populate_links(source)
    archive = make_archive(source, tmp_path, Compression.ZSTD, None)
    target = tmp_path / "target"

    result = run_coord("restore", str(archive), "--target-dir", str(target), "--policies-dir", str(tmp_path / "none"))

    assert result.returncode == 0, result.stdout + result.stderr
    assert differences(snapshot_tree(source), snapshot_tree(target)) == []
    assert os.readlink(target / "pg_tblspc" / "16385") == "/var/lib/postgresql/tablespaces/fast"
    assert not (tmp_path / "outside").exists() and not Path("/var/lib/postgresql/tablespaces/fast").exists()


# What archive.py runs for a backup (issue 11, finding 8), with the compressor coord uses.
POSIX_TAR = ["--format=posix", "--xattrs", "--xattrs-include=*", "--acls", "--sparse", "--numeric-owner"]
# The plain restore command docs/restore.md gives operators.
PLAIN_TAR_RESTORE = (
    "zstd -dc '{archive}' | tar --xattrs --xattrs-include='*' --acls --numeric-owner -xpf - -C '{target}'"
)


def make_posix_archive(source: Path, archive: Path) -> Path:
    subprocess.run(
        f"set -o pipefail; tar --create --file=- --directory='{source}' {' '.join(repr(a) for a in POSIX_TAR)} "
        f"--sort=name . | zstd -q -c -3 -T0 > '{archive}'",
        shell=True,
        executable="/bin/bash",
        check=True,
    )
    return archive


def test_xattrs_capabilities_acls_sparse_files_and_ns_mtimes_come_back(tmp_path: Path, source: Path) -> None:
    populate_attributes(source)
    populate_links(source)
    expected = snapshot_tree(source, attributes=True)
    assert expected["attributes/sparse.img"][-1] < SPARSE_SIZE // 1024  # the source itself is sparse
    assert any(name == "security.capability" for name, _ in expected["attributes/ping-like"][-2])
    archive = make_posix_archive(source, tmp_path / "volume.tar.zst")

    by_coord = tmp_path / "by-coord"
    result = run_coord("restore", str(archive), "--target-dir", str(by_coord), "--policies-dir", str(tmp_path / "n"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "not restored" not in result.stdout
    assert differences(expected, snapshot_tree(by_coord, attributes=True)) == []

    by_tar = tmp_path / "by-tar"
    by_tar.mkdir()
    command = PLAIN_TAR_RESTORE.format(archive=archive, target=by_tar)
    subprocess.run(f"set -o pipefail; {command}", shell=True, executable="/bin/bash", check=True)
    assert differences(expected, snapshot_tree(by_tar, attributes=True)) == []
