"""The backup's own check (WrittenArchiveCheck): the stream is listed while it is written, the file's size after.

Real tar, zstd/gzip and files; the faults are real bytes: a compressor whose output is damaged on its way to
coord (the file then matches the stream, so only the in-line listing can catch it), and a store whose file on disk
is shorter than the stream it was given.
"""

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import BinaryIO

import pytest

from coord.archive import ArchiveOutcome, ArchiveSettings, compressor_command, create_archive, write_file
from coord.encrypt import Encryption, EncryptionMethod
from coord.excludes import ExcludeMatcher
from coord.policy import Compression
from coord.verify import Expected, WrittenArchiveCheck, compare, read_back

# Copies stdin to stdout with one byte in the middle inverted: damage made between the compressor and coord.
FLIP_MIDDLE_BYTE = (
    "import sys; d = bytearray(sys.stdin.buffer.read()); d[len(d) // 2] ^= 0xFF; sys.stdout.buffer.write(d)"
)


def make_tree(root: Path) -> None:
    for part in range(20):
        directory = root / "store" / "263" / "uuid" / f"all_{part}_{part}_0"
        directory.mkdir(parents=True)
        (directory / "data.bin").write_bytes(os.urandom(50_000))
        (directory / "count.txt").write_text(str(part))
    (root / "weird name\nwith newline").write_text("x")


def archive_through(check: WrittenArchiveCheck, source: Path, partial: Path, compressor: list[str]) -> ArchiveOutcome:
    try:
        return create_archive(source, partial, ArchiveSettings(ExcludeMatcher.of([]), compressor, check.write))
    finally:
        check.end_writing()


@pytest.mark.parametrize("compression", [Compression.ZSTD, Compression.GZIP])
def test_a_good_archive_is_listed_while_written_and_passes(tmp_path: Path, compression: Compression) -> None:
    make_tree(tmp_path / "src")
    partial = tmp_path / "a.partial"
    check = WrittenArchiveCheck(compression, None)
    assert check.lists_while_writing
    outcome = archive_through(check, tmp_path / "src", partial, compressor_command(compression))
    assert outcome.problems == []
    read, mismatches = check.read_back(partial, outcome)
    assert mismatches == []
    assert read.entries == outcome.entries == 65  # ., store, 263, uuid, 20 parts x (dir + 2 files), the odd name
    assert read.size == outcome.size == partial.stat().st_size


def test_a_stream_damaged_before_coord_fails_though_the_file_matches_it(tmp_path: Path) -> None:
    make_tree(tmp_path / "src")
    partial = tmp_path / "a.partial"
    check = WrittenArchiveCheck(Compression.ZSTD, None)
    damaging = ["sh", "-c", f'zstd -q -c -3 | {sys.executable} -c "{FLIP_MIDDLE_BYTE}"']
    outcome = archive_through(check, tmp_path / "src", partial, damaging)
    assert outcome.problems == []  # tar and the "compressor" both succeeded: nothing on the write side shows it
    _, mismatches = check.read_back(partial, outcome)
    assert hashlib.sha256(partial.read_bytes()).hexdigest() == outcome.sha256  # the file holds the damaged stream
    assert any("decompression failed" in problem for problem in mismatches), mismatches


def test_a_file_shorter_than_the_stream_fails(tmp_path: Path) -> None:
    """A store that loses the stream's end on the way to disk (a bug, a full quota it did not report)."""

    def lossy_store(stream: BinaryIO, path: Path) -> None:
        write_file(stream, path)
        with open(path, "r+b") as handle:
            handle.truncate(path.stat().st_size - 1)

    make_tree(tmp_path / "src")
    partial = tmp_path / "a.partial"
    check = WrittenArchiveCheck(Compression.ZSTD, None, store=lossy_store)
    outcome = archive_through(check, tmp_path / "src", partial, compressor_command(Compression.ZSTD))
    read, mismatches = check.read_back(partial, outcome)
    assert read.entries == outcome.entries  # the stream itself was fine
    assert [problem for problem in mismatches if problem.startswith("size mismatch")], mismatches


def test_a_missing_file_fails(tmp_path: Path) -> None:
    make_tree(tmp_path / "src")
    partial = tmp_path / "a.partial"
    check = WrittenArchiveCheck(Compression.ZSTD, None)
    outcome = archive_through(check, tmp_path / "src", partial, compressor_command(Compression.ZSTD))
    partial.unlink()
    _, mismatches = check.read_back(partial, outcome)
    assert any("cannot read" in problem for problem in mismatches), mismatches


def test_a_pax_archive_with_xattrs_acls_and_holes_lists_cleanly(tmp_path: Path) -> None:
    """The pax headers (SCHILY.xattr.*, GNU.sparse.*, nanosecond mtime) make no extra members and no messages:
    the listing while written, the index coord keeps, and `coord verify`'s read of the file all agree."""
    source = tmp_path / "src"
    make_tree(source)
    os.setxattr(source / "store", "user.note", b"kept")
    subprocess.run(["setfacl", "-m", "u:1234:rwx", str(source / "store")], check=True)
    subprocess.run(["setcap", "cap_net_raw+ep", str(source / "weird name\nwith newline")], check=True)
    with open(source / "holes.img", "wb") as handle:
        handle.seek(64 << 20)
        handle.write(b"end")
    partial = tmp_path / "a.partial"
    check = WrittenArchiveCheck(Compression.ZSTD, None)
    outcome = archive_through(check, source, partial, compressor_command(Compression.ZSTD))
    assert outcome.problems == []
    read, mismatches = check.read_back(partial, outcome)
    assert mismatches == []
    assert read.entries == outcome.entries == 66  # make_tree's 65 and the sparse file, under its own name
    again = read_back(partial, Compression.ZSTD)
    assert compare(again, Expected(outcome.sha256, outcome.entries, outcome.entries_digest)) == []
    listed = subprocess.run(
        f"zstd -dc '{partial}' | tar -tf -",
        shell=True,
        capture_output=True,
        env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"},
    )
    assert listed.stderr == b"" and b"./holes.img\n" in listed.stdout and b"GNUSparseFile" not in listed.stdout


def test_a_given_store_is_used_when_encrypting_too(tmp_path: Path) -> None:
    """The store passed in is the one that writes, with or without encryption (it was once replaced by gpg's)."""
    stored: list[Path] = []

    def recording_store(stream: BinaryIO, path: Path) -> None:
        stored.append(path)
        write_file(stream, path)

    make_tree(tmp_path / "src")
    partial = tmp_path / "a.partial"
    to_keys = Encryption(EncryptionMethod.PUBLIC_KEY, tmp_path / "no-gpg-home", ("0" * 40,))
    check = WrittenArchiveCheck(Compression.ZSTD, to_keys, store=recording_store)
    outcome = archive_through(check, tmp_path / "src", partial, compressor_command(Compression.ZSTD))
    assert stored == [partial] and not outcome.critical
    read, mismatches = check.read_back(partial, outcome)
    assert read.entries == outcome.entries and mismatches == []
