"""Archives in independent zstd frames (pzstd, issue 16): the in-line check decodes them on every core, plain
`zstd -dc | tar -x` still restores them, and coord reads them and the one-frame archives written before alike.

Real tar, zstd, pzstd and files. The data is larger than one pzstd frame (about 8 MiB of input at level 3), so the
archive really holds several frames.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

import coord.archive as archive_module
from conftest import run_coord
from coord.archive import ArchiveOutcome, ArchiveSettings, compressor_command, create_archive, decompressor_command
from coord.excludes import ExcludeMatcher
from coord.policy import Compression
from coord.verify import Expected, WrittenArchiveCheck, compare, read_back
from trees import differences, snapshot_tree

pytest_plugins = ["sharedfixtures"]  # state_dir

SKIPPABLE_FRAME_MAGIC = 0x184D2A50  # pzstd's frame header: a skippable frame whose 4 bytes give the next frame's size
ZSTD_FRAME_MAGIC = 0xFD2FB528
ONE_FRAME_ZSTD = ["zstd", "-q", "-c", "-3", "-T0"]  # coord's compressor before issue 16: one frame


def independent_frames(archive: Path) -> int:
    """How many pzstd frames the archive holds (each a skippable size header, then a zstd frame of that size).

    Raises AssertionError when the file is not wholly made of them (a one-frame archive of plain zstd, say)."""
    data = archive.read_bytes()
    offset = frames = 0
    while offset < len(data):
        magic, header_size = struct.unpack_from("<II", data, offset)
        assert magic == SKIPPABLE_FRAME_MAGIC, f"no pzstd frame header at byte {offset}"
        (frame_size,) = struct.unpack_from("<I", data, offset + 8)
        assert struct.unpack_from("<I", data, offset + 8 + header_size)[0] == ZSTD_FRAME_MAGIC
        offset += 8 + header_size + frame_size
        frames += 1
    assert offset == len(data)
    return frames


def make_large_tree(root: Path) -> None:
    """20 MiB in a few hundred files: random (incompressible) and repetitive (compressible) ones."""
    for part in range(40):
        directory = root / "store" / f"all_{part}_{part}_0"
        directory.mkdir(parents=True)
        (directory / "data.bin").write_bytes(os.urandom(256 * 1024))
        (directory / "columns.txt").write_text(f"columns format version: 1\n{part} columns:\n" * 4000)
        for small in range(5):
            (directory / f"small_{small}.txt").write_text(str(part * small))
    (root / "weird name\nwith newline").write_text("x")


def archive_checked(source: Path, partial: Path, compressor: list[str]) -> tuple[ArchiveOutcome, list[str]]:
    """The archive written as `coord backup` writes it (checked in line), and the check's mismatches."""
    check = WrittenArchiveCheck(Compression.ZSTD, None)
    try:
        outcome = create_archive(source, partial, ArchiveSettings(ExcludeMatcher.of([]), compressor, check.write))
    finally:
        check.end_writing()
    assert outcome.problems == [], outcome.problems
    _, mismatches = check.read_back(partial, outcome)
    return outcome, mismatches


@pytest.fixture
def large_tree(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    make_large_tree(root)
    return root


def test_coord_compresses_zstd_in_independent_frames_and_checks_them_with_pzstd() -> None:
    assert shutil.which("pzstd"), "pzstd is part of Debian's zstd package: scripts/bootstrap.sh installs it"
    assert compressor_command(Compression.ZSTD, 5, 3) == ["pzstd", "-q", "-c", "-5", "-p", "3"]
    assert compressor_command(Compression.ZSTD)[:4] == ["pzstd", "-q", "-c", "-3"]  # the default level
    assert decompressor_command(Compression.ZSTD)[:4] == ["pzstd", "-q", "-d", "-c"]


def test_an_archive_in_frames_passes_its_check_and_restores_with_plain_zstd_and_tar(
    tmp_path: Path, large_tree: Path
) -> None:
    archive = tmp_path / "volume.tar.zst"
    outcome, mismatches = archive_checked(large_tree, archive, compressor_command(Compression.ZSTD))
    assert mismatches == []
    assert independent_frames(archive) >= 2
    target = tmp_path / "by-hand"
    target.mkdir()
    # What the README tells an operator to run, with no coord and no pzstd.
    subprocess.run(
        f"set -o pipefail; zstd -dc '{archive}' | tar -x --numeric-owner -C '{target}'",
        shell=True,
        executable="/bin/bash",
        check=True,
        capture_output=True,
    )
    assert differences(snapshot_tree(large_tree), snapshot_tree(target)) == []
    assert outcome.entries == 40 * 8 + 3  # ., store, the odd name; per part its directory and 7 files


@pytest.mark.parametrize("compressor", [ONE_FRAME_ZSTD, compressor_command(Compression.ZSTD)], ids=["one", "frames"])
def test_coord_reads_one_frame_and_framed_archives_alike(
    tmp_path: Path, large_tree: Path, state_dir: Path, compressor: list[str]
) -> None:
    """`coord verify`'s read (read_back: decompress, list, hash, compared with what the write side recorded) and
    `coord restore` on an archive of either shape."""
    archive = tmp_path / "volume.tar.zst"
    outcome, mismatches = archive_checked(large_tree, archive, compressor)
    assert mismatches == []
    read = read_back(archive, Compression.ZSTD)
    recorded = Expected(outcome.sha256, outcome.entries, outcome.entries_digest, outcome.sha256)
    assert compare(read, recorded) == []
    restored = run_coord(
        "restore",
        str(archive),
        "--target-dir",
        str(tmp_path / "by-coord"),
        "--state-dir",
        str(state_dir),
        "--policies-dir",
        str(tmp_path / "none"),
    )
    assert restored.returncode == 0, restored.stderr
    assert differences(snapshot_tree(large_tree), snapshot_tree(tmp_path / "by-coord")) == []


def test_a_damaged_frame_fails_the_in_line_check(tmp_path: Path, large_tree: Path) -> None:
    """The parallel decoder is as strict as zstd -d: one byte flipped inside a frame fails the check."""
    flip = "import sys; d = bytearray(sys.stdin.buffer.read()); d[len(d) // 2] ^= 0xFF; sys.stdout.buffer.write(d)"
    damaging = ["sh", "-c", f"{' '.join(compressor_command(Compression.ZSTD))} | python3 -c '{flip}'"]
    _, mismatches = archive_checked(large_tree, tmp_path / "volume.tar.zst", damaging)
    assert any("decompression failed" in problem for problem in mismatches), mismatches


def test_without_pzstd_coord_falls_back_to_one_frame_zstd_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("tar", "zstd", "sh"):
        (tools / tool).symlink_to(shutil.which(tool) or tool)
    monkeypatch.setenv("PATH", str(tools))
    monkeypatch.setattr(archive_module, "_missing_tools_noted", set())
    assert compressor_command(Compression.ZSTD, 4) == ["zstd", "-q", "-c", "-4", "-T0"]
    assert decompressor_command(Compression.ZSTD) == ["zstd", "-q", "-d", "-c"]
    assert [record.levelname for record in caplog.records] == ["WARNING"]  # once, not per command
    assert compressor_command(Compression.GZIP, 9) == ["gzip", "-c", "-9"]
    assert "pzstd is not on PATH" in caplog.text
    source = tmp_path / "source"
    source.mkdir()
    (source / "file").write_text("data\n" * 1000)
    _, mismatches = archive_checked(source, tmp_path / "volume.tar.zst", compressor_command(Compression.ZSTD))
    assert mismatches == []


def test_gzip_archives_are_compressed_on_every_core_and_read_by_plain_gzip(tmp_path: Path, large_tree: Path) -> None:
    assert shutil.which("pigz"), "scripts/bootstrap.sh installs pigz"
    assert compressor_command(Compression.GZIP, None, 2) == ["pigz", "-c", "-6", "-p", "2"]
    archive = tmp_path / "volume.tar.gz"
    check = WrittenArchiveCheck(Compression.GZIP, None)
    settings = ArchiveSettings(ExcludeMatcher.of([]), compressor_command(Compression.GZIP), check.write)
    try:
        outcome = create_archive(large_tree, archive, settings)
    finally:
        check.end_writing()
    assert outcome.problems == []
    assert check.read_back(archive, outcome)[1] == []
    target = tmp_path / "by-hand"
    target.mkdir()
    subprocess.run(
        f"set -o pipefail; gzip -dc '{archive}' | tar -x --numeric-owner -C '{target}'",
        shell=True,
        executable="/bin/bash",
        check=True,
        capture_output=True,
    )
    assert differences(snapshot_tree(large_tree), snapshot_tree(target)) == []
