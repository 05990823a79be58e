"""The archiving step on real GNU tar and zstd/gzip in temporary directories (no Docker)."""

import hashlib
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from tests.conftest import archive_listing

from archives import plain_settings
from coord.archive import ArchiveSettings, compressor_command, create_archive
from coord.consistency import ArchivedTree, Verdict, assess_consistency
from coord.excludes import ExcludeMatcher
from coord.fsutil import identity_of, open_directory
from coord.policy import Compression
from coord.problems import EntryProblem, ProblemKind
from coord.snapshot import CloneMethod, Snapshot
from coord.verify import Expected, compare, read_back


def held_snapshot(path: Path, method: CloneMethod) -> Snapshot:
    """A Snapshot of the directory at `path` as coord holds one (opened, its identity known), unpaused now."""
    descriptor = open_directory(path)
    return Snapshot(path, identity_of(os.fstat(descriptor)), method, descriptor, unpaused_at_ns=time.time_ns())


def make_tree(root: Path) -> None:
    (root / "store/263/uuid/all_1_1_0").mkdir(parents=True)
    (root / "store/263/uuid/all_1_1_0/data.bin").write_bytes(os.urandom(200_000))
    (root / "store/263/uuid/format_version.txt").write_text("1")
    (root / "weird name\nwith newline").write_text("x")
    (root / "link").symlink_to("store/263/uuid/format_version.txt")


def listing(archive: Path, compression: Compression) -> list[str]:
    return archive_listing(archive, "zstd" if compression is Compression.ZSTD else "gzip")


@pytest.mark.parametrize("compression", [Compression.ZSTD, Compression.GZIP])
def test_quiet_tree_is_consistent_and_reads_back_identically(tmp_path: Path, compression: Compression) -> None:
    source = tmp_path / "src"
    source.mkdir()
    make_tree(source)
    partial = tmp_path / "out" / "a.tar.partial"
    outcome = create_archive(source, partial, plain_settings(compression))
    assert outcome.problems == []
    assert outcome.consistency is not None and outcome.consistency.verdict is Verdict.CONSISTENT
    names = listing(partial, compression)
    assert outcome.entries == len(names) == 9  # ., store, 263, uuid, part, data.bin, format_version, weird, link
    assert outcome.sha256 == hashlib.sha256(partial.read_bytes()).hexdigest()
    assert outcome.size == partial.stat().st_size
    read = read_back(partial, compression)
    assert compare(read, Expected(outcome.sha256, outcome.entries, outcome.entries_digest)) == []


def test_socket_is_skipped_and_excluded_paths_are_recorded(tmp_path: Path) -> None:
    source = tmp_path / "src"
    make_tree(source)
    (source / "tmp").mkdir()
    (source / "tmp/scratch").write_text("x")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(source / "server.sock"))
    try:
        outcome = create_archive(
            source,
            tmp_path / "a.partial",
            ArchiveSettings(ExcludeMatcher.of(["/tmp"]), compressor_command(Compression.ZSTD)),
        )
    finally:
        server.close()
    assert [(p.kind, p.path) for p in outcome.problems] == [(ProblemKind.SKIPPED, "server.sock")]
    assert outcome.consistency.excluded == ["tmp"]
    assert outcome.consistency.verdict is Verdict.CONSISTENT
    assert not any("tmp" in name for name in listing(tmp_path / "a.partial", Compression.ZSTD))


def test_missing_volume_root_is_critical_and_writes_nothing(tmp_path: Path) -> None:
    partial = tmp_path / "out" / "a.partial"
    outcome = create_archive(tmp_path / "nope", partial, plain_settings(Compression.ZSTD))
    assert [p.kind for p in outcome.problems] == [ProblemKind.CRITICAL]
    assert "missing or not a directory" in outcome.problems[0].detail
    assert not partial.exists()


def test_unwritable_destination_is_critical(tmp_path: Path) -> None:
    source = tmp_path / "src"
    make_tree(source)
    blocker = tmp_path / "dest"
    blocker.write_text("a file where the destination directory should be")
    outcome = create_archive(source, blocker / "vol" / "a.partial", plain_settings(Compression.ZSTD))
    assert [p.kind for p in outcome.critical] == [ProblemKind.CRITICAL]
    assert "cannot write to destination" in outcome.critical[0].detail


@pytest.fixture
def small_filesystem(tmp_path: Path):
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)], check=True)
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def test_full_destination_fails_and_leaves_no_partial(tmp_path: Path, small_filesystem: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "big.bin").write_bytes(os.urandom(2_000_000))  # incompressible: cannot fit in 256 KiB
    partial = small_filesystem / "vol" / "a.tar.zst.partial"
    outcome = create_archive(source, partial, plain_settings(Compression.ZSTD))
    assert any("No space left on device" in p.detail for p in outcome.critical), outcome.problems
    # The runner removes the partial of a failed volume; the archiver leaves it to be removed, never renamed.
    assert not partial.with_name("a.tar.zst").exists()


@pytest.mark.parametrize("compression", [Compression.ZSTD, Compression.GZIP])
def test_read_back_catches_a_corrupted_byte(tmp_path: Path, compression: Compression) -> None:
    source = tmp_path / "src"
    make_tree(source)
    partial = tmp_path / "a.partial"
    outcome = create_archive(source, partial, plain_settings(compression))
    data = bytearray(partial.read_bytes())
    data[len(data) // 2] ^= 0xFF
    partial.write_bytes(bytes(data))
    problems = compare(
        read_back(partial, compression), Expected(outcome.sha256, outcome.entries, outcome.entries_digest)
    )
    assert any(p.startswith("sha256 mismatch") for p in problems)
    assert any("decompression failed" in p or "tar could not list" in p or "entry count" in p for p in problems)


def test_truncated_archive_fails_read_back(tmp_path: Path) -> None:
    source = tmp_path / "src"
    make_tree(source)
    partial = tmp_path / "a.partial"
    outcome = create_archive(source, partial, plain_settings(Compression.ZSTD))
    with open(partial, "r+b") as handle:
        handle.truncate(outcome.size // 2)
    problems = compare(read_back(partial, Compression.ZSTD), Expected(outcome.sha256, outcome.entries))
    assert any("decompression failed" in p for p in problems)


def test_interrupted_archive_leaves_no_partial(tmp_path: Path) -> None:
    source = tmp_path / "src"
    make_tree(source)
    partial = tmp_path / "a.partial"

    def interrupt(entries: int, written: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        create_archive(source, partial, plain_settings(Compression.ZSTD, on_progress=interrupt))
    assert not partial.exists()


# --- the verdict, from a recorded read and the tree afterwards -------------------------------------------------


def read_of(*members: str) -> ArchivedTree:
    tree = ArchivedTree()
    for member in members:
        tree.add_member(member)
    return tree


def test_merge_race_is_at_risk(tmp_path: Path) -> None:
    # tar listed the table dir with parts A and B, read A, B vanished; a merge wrote C and deleted A and B.
    table = tmp_path / "store/t"
    (table / "all_1_2_1").mkdir(parents=True)
    tree = read_of("./", "./store/", "./store/t/", "./store/t/all_1_1_0/")
    vanished = [EntryProblem(ProblemKind.VANISHED, "store/t/all_2_2_0", "File removed before we read it")]
    result = assess_consistency(str(tmp_path), tree, vanished, ExcludeMatcher.of([]))
    assert result.verdict is Verdict.AT_RISK
    assert result.at_risk_directories[0].directory == "store/t"
    assert result.at_risk_directories[0].gained == ["all_1_2_1"]
    assert result.at_risk_directories[0].lost == ["all_1_1_0", "all_2_2_0"]


def test_vanished_without_new_entries_is_fuzzy(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d/kept").write_text("x")
    tree = read_of("./", "./d/", "./d/kept")
    vanished = [EntryProblem(ProblemKind.VANISHED, "d/gone", "File removed before we read it")]
    result = assess_consistency(str(tmp_path), tree, vanished, ExcludeMatcher.of([]))
    assert result.verdict is Verdict.FUZZY


def test_new_entry_in_an_excluded_path_does_not_count(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d/kept").write_text("x")
    (tmp_path / "d/tmp_insert_9").mkdir()
    tree = read_of("./", "./d/", "./d/kept")
    result = assess_consistency(str(tmp_path), tree, [], ExcludeMatcher.of(["tmp_*"]))
    assert result.verdict is Verdict.CONSISTENT
    assert result.excluded == ["d/tmp_insert_9"]


def test_shrunk_member_is_at_risk(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    tree = read_of("./", "./f")
    shrank = [EntryProblem(ProblemKind.SHRANK, "f", "File shrank by 10 bytes; padding with zeros")]
    assert assess_consistency(str(tmp_path), tree, shrank, ExcludeMatcher.of([])).verdict is Verdict.AT_RISK


def test_a_link_removed_while_a_snapshot_file_is_read_is_relinked_not_changed(tmp_path: Path) -> None:
    """Reading a hardlink snapshot while the volume drops its own name of a file (ClickHouse deleting a merged-away
    part): tar sees the inode's ctime move and says "file changed as we read it"; the content is the snapshot's."""
    volume, snapshot = tmp_path / "volume", tmp_path / "snapshot"
    (volume / "part").mkdir(parents=True)
    (volume / "part/data.bin").write_bytes(os.urandom(4 << 20))
    (snapshot / "part").mkdir(parents=True)
    os.link(volume / "part/data.bin", snapshot / "part/data.bin")
    view = held_snapshot(snapshot, CloneMethod.HARDLINK)
    # The compressor starts draining only after the volume's link is gone, so tar is mid-file when it goes.
    threading.Timer(0.3, (volume / "part/data.bin").unlink).start()
    slow = ["sh", "-c", "sleep 0.8; exec gzip -1 -c"]

    plain = create_archive(snapshot, tmp_path / "a.tar.partial", ArchiveSettings(ExcludeMatcher.of([]), slow))
    assert [(p.kind, p.path) for p in plain.problems] == [(ProblemKind.CHANGED, "part/data.bin")]
    assert plain.consistency.verdict is Verdict.FUZZY

    os.link(snapshot / "part/data.bin", volume / "part/data.bin")
    threading.Timer(0.3, (volume / "part/data.bin").unlink).start()
    outcome = create_archive(
        snapshot,
        tmp_path / "b.tar.partial",
        ArchiveSettings(ExcludeMatcher.of([]), slow, content_unchanged=view.content_unchanged),
    )
    assert (outcome.problems, outcome.relinked) == ([], ["part/data.bin"])
    assert outcome.consistency.verdict is Verdict.CONSISTENT

    # A write after the unpause is a real change: it stays one.
    with open(snapshot / "part/data.bin", "ab") as handle:
        handle.write(b"x")
    assert not view.content_unchanged("part/data.bin")
    assert not view.content_unchanged("part")  # a directory is never shared with the volume
    assert not held_snapshot(snapshot, CloneMethod.REFLINK).content_unchanged("part/x")


# --- files modified in place during the read (ctime after the read began) --------------------------------------


def past_a_clock_tick() -> None:
    """File times come from the kernel's coarse clock (4 ms ticks here), which can lag time.time_ns(): a change
    made at once after a start taken with it may carry an earlier time. coord's real starts are followed by
    an unpause or a process start, longer than a tick, before anything can write."""
    time.sleep(0.01)


def rewrite_in_place(path: Path, content: bytes) -> None:
    """Overwrite `path` from its start without truncating (same size, same inode): no name changes."""
    with open(path, "r+b") as handle:
        handle.write(content)


def test_a_file_rewritten_in_place_after_tar_read_it_makes_a_live_read_fuzzy(tmp_path: Path) -> None:
    """tar reads a.dat, then the big m.bin; a.dat is rewritten (same size) while tar is still on m.bin. tar says
    nothing (it was done with a.dat), no name changed: only a.dat's ctime shows the read was not one instant."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.dat").write_bytes(b"00000001")
    (source / "m.bin").write_bytes(os.urandom(4 << 20))
    (source / "z.dat").write_bytes(b"00000001")
    # The compressor drains only after the rewrite, so tar is blocked in m.bin when it happens.
    threading.Timer(0.3, rewrite_in_place, (source / "a.dat", b"00000002")).start()
    slow = ["sh", "-c", "sleep 0.8; exec gzip -1 -c"]
    outcome = create_archive(source, tmp_path / "a.tar.partial", ArchiveSettings(ExcludeMatcher.of([]), slow))
    assert outcome.problems == []
    consistency = outcome.consistency
    assert consistency is not None and consistency.verdict is Verdict.FUZZY
    assert (consistency.modified_count, consistency.modified_sample) == (1, ["a.dat"])
    assert consistency.reasons == [
        "1 archived file(s) were modified during the read (ctime after the read began, e.g. a.dat): the archive "
        "does not show the volume at one instant"
    ]


def test_a_file_whose_mtime_is_put_back_still_counts(tmp_path: Path) -> None:
    """`touch -d` can put the mtime back; nothing can put the ctime back."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d/a.dat").write_bytes(b"1")
    before = os.lstat(tmp_path / "d/a.dat")
    started = time.time_ns()
    past_a_clock_tick()
    rewrite_in_place(tmp_path / "d/a.dat", b"2")
    os.utime(tmp_path / "d/a.dat", ns=(before.st_atime_ns, before.st_mtime_ns))
    result = assess_consistency(
        str(tmp_path), read_of("./", "./d/", "./d/a.dat"), [], ExcludeMatcher.of([]), read_started_ns=started
    )
    assert result.verdict is Verdict.FUZZY and result.modified_sample == ["d/a.dat"]
    # Without a read start (a snapshot read, judged by Snapshot.modified_since_unpause) ctime is not looked at.
    plain = assess_consistency(str(tmp_path), read_of("./", "./d/", "./d/a.dat"), [], ExcludeMatcher.of([]))
    assert plain.verdict is Verdict.CONSISTENT


def test_a_quiet_tree_stays_consistent_with_the_ctime_check(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d/a.dat").write_bytes(b"1")
    (tmp_path / "d/link").symlink_to("a.dat")
    started = time.time_ns()
    tree = read_of("./", "./d/", "./d/a.dat", "./d/link")
    result = assess_consistency(str(tmp_path), tree, [], ExcludeMatcher.of([]), read_started_ns=started)
    assert (result.verdict, result.modified_count, result.reasons) == (Verdict.CONSISTENT, 0, [])


def test_a_directory_replaced_by_a_link_after_the_read_is_not_followed(tmp_path: Path) -> None:
    """The re-listing opens directories with O_NOFOLLOW: a link planted where an archived directory was is not
    listed (nor its target's files stat()ed); what tar archived in that directory counts as lost."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "kept").write_text("x")  # the same name as the archived file: following the link would hide the loss
    root = tmp_path / "volume"
    root.mkdir()
    (root / "d").symlink_to(outside)
    started = time.time_ns()
    past_a_clock_tick()
    os.utime(outside / "kept")  # its ctime moves after the start: only seen if the link were followed
    result = assess_consistency(
        str(root), read_of("./", "./d/", "./d/kept"), [], ExcludeMatcher.of([]), read_started_ns=started
    )
    assert result.verdict is Verdict.FUZZY
    assert (result.lost, result.modified_count) == (1, 0)


# --- the snapshot's check: ctime after the unpause, a removed hard link told from a write ------------------------


def linked_snapshot(tmp_path: Path) -> tuple[Path, Path, Snapshot]:
    """A volume with two files and a hardlink snapshot of it, unpaused now."""
    volume, snapshot = tmp_path / "volume", tmp_path / "snapshot"
    for tree in (volume, snapshot):
        (tree / "part").mkdir(parents=True)
    for name in ("a.dat", "z.dat"):
        (volume / "part" / name).write_bytes(b"00000001")
        os.link(volume / "part" / name, snapshot / "part" / name)
    past_a_clock_tick()  # the links' own ctime lies before the unpause
    view = held_snapshot(snapshot, CloneMethod.HARDLINK)
    past_a_clock_tick()
    return volume, snapshot, view


def test_a_snapshot_file_written_with_its_mtime_put_back_is_modified(tmp_path: Path) -> None:
    volume, _, view = linked_snapshot(tmp_path)
    before = os.lstat(volume / "part/a.dat")
    rewrite_in_place(volume / "part/a.dat", b"00000002")  # the snapshot shares the inode: its copy changes too
    os.utime(volume / "part/a.dat", ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.lstat(volume / "part/a.dat").st_mtime_ns == before.st_mtime_ns  # an mtime check sees nothing
    assert view.modified_since_unpause(ExcludeMatcher.of([])) == ["part/a.dat"]
    assert not view.content_unchanged("part/a.dat")
    assert view.modified_since_unpause(ExcludeMatcher.of(["part"])) == []  # excluded directories stay excluded


def test_a_name_removed_from_the_volume_is_relinked_not_modified(tmp_path: Path) -> None:
    volume, _, view = linked_snapshot(tmp_path)
    (volume / "part/a.dat").unlink()  # moves the shared inode's ctime: its content is still the snapshot's
    assert view.modified_since_unpause(ExcludeMatcher.of([])) == []
    assert view.content_unchanged("part/a.dat")


def test_a_hard_link_added_in_the_volume_counts_as_modified(tmp_path: Path) -> None:
    """A link added moves ctime without removing a name: not told from a write with the mtime put back, so it
    counts (the rule errs on the side of at-risk)."""
    volume, _, view = linked_snapshot(tmp_path)
    os.link(volume / "part/z.dat", volume / "z-again.dat")
    assert view.modified_since_unpause(ExcludeMatcher.of([])) == ["part/z.dat"]


def test_a_reflink_snapshot_copy_changed_after_the_unpause_is_modified(tmp_path: Path) -> None:
    """A reflink copy shares nothing with the volume, but lies inside it: a change to the copy itself counts."""
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "a.dat").write_bytes(b"1")
    past_a_clock_tick()
    view = held_snapshot(copy, CloneMethod.REFLINK)
    past_a_clock_tick()
    assert view.modified_since_unpause(ExcludeMatcher.of([])) == []
    os.chmod(copy / "a.dat", 0o600)
    assert view.modified_since_unpause(ExcludeMatcher.of([])) == ["a.dat"]


# --- what the file system holds comes back: xattrs, capabilities, ACLs, holes, nanosecond times ------------------

PLAIN_EXTRACT = "zstd -dc '{archive}' | tar --xattrs --xattrs-include='*' --acls --numeric-owner -xpf - -C '{target}'"


def attribute_tree_hash(root: Path) -> dict[str, tuple[object, ...]]:
    """Per path below `root`: type and mode, owner, mtime in ns, every extended attribute (ACLs are the
    system.posix_acl_* ones, capabilities security.capability), and content hash or link target. Local to this
    file on purpose; the restore tests have their own in tests/trees.py."""
    result: dict[str, tuple[object, ...]] = {}
    for directory, subdirectories, files in os.walk(root):
        for name in [*subdirectories, *files, *([] if directory != str(root) else ["."])]:
            path = os.path.normpath(os.path.join(directory, name))
            status = os.lstat(path)
            xattrs = tuple(
                sorted(
                    (key, os.getxattr(path, key, follow_symlinks=False))
                    for key in os.listxattr(path, follow_symlinks=False)
                )
            )
            if os.path.islink(path):
                content: object = os.readlink(path)
            elif os.path.isfile(path):
                with open(path, "rb") as handle:
                    content = hashlib.file_digest(handle, "sha256").hexdigest()
            else:
                content = None
            result[os.path.relpath(path, root)] = (
                status.st_mode,
                status.st_uid,
                status.st_gid,
                status.st_mtime_ns,
                xattrs,
                content,
            )
    return result


def make_attribute_tree(root: Path) -> None:
    (root / "bin").mkdir(parents=True)
    (root / "bin/ping").write_bytes(b"#!/bin/sh\n")
    os.chmod(root / "bin/ping", 0o755)
    subprocess.run(["setcap", "cap_net_raw+ep", str(root / "bin/ping")], check=True)
    (root / "labelled").write_text("x")
    os.setxattr(root / "labelled", "user.origin", b"coord test")
    os.setxattr(root / "labelled", "trusted.overlay.opaque", b"y")
    (root / "shared").mkdir()
    subprocess.run(["setfacl", "-m", "u:1234:rwx", "-d", "-m", "g:999:rx", str(root / "shared")], check=True)
    (root / "shared/report").write_text("acl")  # inherits the default ACL
    subprocess.run(["setfacl", "-m", "u:4321:r", str(root / "shared/report")], check=True)
    os.chown(root / "shared/report", 999, 999)
    with open(root / "sparse.img", "wb") as handle:  # 256 MiB, 8 KiB of it data
        handle.write(b"start" * 1000)
        handle.seek(256 << 20)
        handle.write(b"end" * 1000)
    (root / "link").symlink_to("labelled")
    for index, path in enumerate(sorted(root.rglob("*"))):
        os.utime(path, ns=(1_700_000_000_123_456_789 + index, 1_700_000_000_987_654_321 + index), follow_symlinks=False)
    os.utime(root, ns=(1_700_000_000_000_000_001, 1_700_000_000_000_000_001))


def test_xattrs_capabilities_acls_holes_and_nanosecond_times_survive_the_documented_extract(tmp_path: Path) -> None:
    source = tmp_path / "src"
    make_attribute_tree(source)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(source / "app.sock"))  # cannot be archived: listed as skipped
    os.utime(source, ns=(1_700_000_000_000_000_001, 1_700_000_000_000_000_001))
    expected = attribute_tree_hash(source)
    del expected["app.sock"]
    assert expected["bin/ping"][4] and dict(expected["shared"][4]).keys() >= {
        "system.posix_acl_access",
        "system.posix_acl_default",
    }
    archive = tmp_path / "a.tar.zst"
    try:
        outcome = create_archive(source, archive, plain_settings(Compression.ZSTD))
    finally:
        sock.close()
    assert [(p.kind, p.path, p.detail) for p in outcome.problems] == [
        (ProblemKind.SKIPPED, "app.sock", "socket ignored")
    ]
    assert outcome.consistency is not None and outcome.consistency.verdict is Verdict.CONSISTENT
    target = tmp_path / "restored"
    target.mkdir()
    subprocess.run(PLAIN_EXTRACT.format(archive=archive, target=target), shell=True, check=True)
    assert attribute_tree_hash(target) == expected
    restored = os.lstat(target / "sparse.img")
    assert restored.st_size == (256 << 20) + 3000
    assert restored.st_blocks * 512 < 1 << 20  # holes stay holes: not 256 MiB of zeros on disk
    assert archive.stat().st_size < 1 << 20
