"""tar's diagnostics (LC_ALL=C, GNU tar 1.34) classified entry by entry."""

import pytest

from coord.problems import ProblemKind, classify_tar_line, member_to_path, unescape_tar_name

UUID_DIR = "./store/263/2632a5fb-f759-4d05-824b-dddcb78faff3"


@pytest.mark.parametrize(
    ("line", "kind", "path"),
    [
        (
            f"tar: {UUID_DIR}/202601_223092_223092_0: File removed before we read it",
            ProblemKind.VANISHED,
            "store/263/2632a5fb-f759-4d05-824b-dddcb78faff3/202601_223092_223092_0",
        ),
        (
            f"tar: {UUID_DIR}/all_1_1_0/data.bin: Cannot open: No such file or directory",
            ProblemKind.VANISHED,
            "store/263/2632a5fb-f759-4d05-824b-dddcb78faff3/all_1_1_0/data.bin",
        ),
        (
            f"tar: {UUID_DIR}/x: Cannot savedir: No such file or directory",
            ProblemKind.VANISHED,
            "store/263/2632a5fb-f759-4d05-824b-dddcb78faff3/x",
        ),
        (
            f"tar: {UUID_DIR}: file changed as we read it",
            ProblemKind.CHANGED,
            "store/263/2632a5fb-f759-4d05-824b-dddcb78faff3",
        ),
        ("tar: ./log/a.log: File shrank by 100 bytes; padding with zeros", ProblemKind.SHRANK, "log/a.log"),
        ("tar: ./run/mysqld.sock: socket ignored", ProblemKind.SKIPPED, "run/mysqld.sock"),
        ("tar: ./secret: Cannot open: Permission denied", ProblemKind.CRITICAL, "secret"),
        ("tar: ./dir: Cannot savedir: Permission denied", ProblemKind.CRITICAL, "dir"),
        (
            "tar: ./disk.bin: Read error at byte 0, while reading 512 bytes: Input/output error",
            ProblemKind.CRITICAL,
            "disk.bin",
        ),
        # The top level missing is not a vanished entry: the volume root is gone.
        ("tar: .: Cannot stat: No such file or directory", ProblemKind.CRITICAL, "."),
        ("tar: ./: Cannot open: No such file or directory", ProblemKind.CRITICAL, "."),
        # Names are escaped by tar; ':' inside a name is '\:' in diagnostics.
        ("tar: ./lo\\:ck: Cannot open: Permission denied", ProblemKind.CRITICAL, "lo:ck"),
        # Archives keep xattrs and ACLs (--xattrs --acls): tar stays silent where the file system has none
        # (ENOTSUP), and says so when it cannot read them. Those attributes are then missing from the archive.
        ("tar: ./bin/ping: Warning: Cannot llistxattr: Permission denied", ProblemKind.CRITICAL, "bin/ping"),
        ("tar: ./shared: Warning: Cannot acl_get_file_at: Input/output error", ProblemKind.CRITICAL, "shared"),
        ("tar: something tar never said before", ProblemKind.CRITICAL, ""),
        ("tar: ./x: some new message from a future tar", ProblemKind.CRITICAL, "x"),
    ],
)
def test_each_tar_message_is_classified(line: str, kind: ProblemKind, path: str) -> None:
    problem = classify_tar_line(line)
    assert problem is not None
    assert (problem.kind, problem.path) == (kind, path)


@pytest.mark.parametrize(
    "line",
    ["tar: Exiting with failure status due to previous errors", "tar: Error exit delayed from previous errors", ""],
)
def test_summary_lines_add_nothing(line: str) -> None:
    assert classify_tar_line(line) is None


def test_unescape_matches_the_names_the_file_system_gives() -> None:
    assert unescape_tar_name("back\\\\slash") == "back\\slash"
    assert unescape_tar_name("new\\nline") == "new\nline"
    assert unescape_tar_name("a\\:b") == "a:b"
    # Latin-1 'é' bytes are not UTF-8: they come back as surrogate escapes, like os.listdir gives them.
    import os

    assert unescape_tar_name("\\351t\\351") == os.fsdecode(b"\xe9t\xe9")
    assert unescape_tar_name("plain name") == "plain name"


def test_member_paths_are_relative_to_the_volume_root() -> None:
    assert member_to_path("./") == "."
    assert member_to_path("./store/") == "store"
    assert member_to_path("./store/263/x") == "store/263/x"
