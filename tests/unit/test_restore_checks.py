"""Unit tests of the restore safety checks: names, member types, links, and which policy's rules apply. No archive."""

from __future__ import annotations

from pathlib import Path

import pytest

from coord.errors import PolicyError
from coord.policy import RestoreSettings
from coord.restore import (
    AclError,
    Member,
    MemberKind,
    UnsafeMember,
    acl_to_xattr,
    check_members,
    normalize_name,
    restore_settings_for,
)

DEFAULTS = RestoreSettings()


def member(name: str, kind: MemberKind = MemberKind.FILE, link: str = "") -> Member:
    return Member(name=name, kind=kind, mode=0o644, uid=0, gid=0, size=0, mtime=0, link=link)


def directory(name: str) -> Member:
    return member(name, MemberKind.DIRECTORY)


def symlink(name: str, target: str) -> Member:
    return member(name, MemberKind.SYMLINK, target)


def hardlink(name: str, target: str) -> Member:
    return member(name, MemberKind.HARDLINK, target)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [("./", "."), (".", "."), ("./a", "a"), ("./a/b/", "a/b"), ("a//b", "a/b"), ("./a/./b", "a/b"), ("x y", "x y")],
)
def test_normalize_name_accepts_relative_names(raw: str, clean: str) -> None:
    assert normalize_name(raw) == clean


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("/etc/passwd", "absolute"),
        ("//etc", "absolute"),
        ("../x", "'..'"),
        ("./a/../../x", "'..'"),
        ("a/..", "'..'"),
        ("", "empty"),
    ],
)
def test_normalize_name_refuses_and_never_strips(raw: str, why: str) -> None:
    with pytest.raises(UnsafeMember, match=why):
        normalize_name(raw)


def test_an_ordinary_tree_passes() -> None:
    members = [
        directory("."),
        directory("data"),
        member("data/file"),
        hardlink("data/again", "data/file"),
        symlink("current", "data/file"),
        symlink("data/up", "../current"),
        symlink("dangling", "not/there"),
        symlink("self-dir", "."),
    ]
    assert check_members(members, DEFAULTS) == []


def test_links_are_recreated_as_links_whatever_they_point_at() -> None:
    """Restore never follows a link, so where a link points is the volume's business (finding 7): Postgres
    tablespaces are absolute links, `../` links and loops are ordinary content."""
    members = [
        directory("."),
        directory("pg_tblspc"),
        symlink("pg_tblspc/16385", "/var/lib/postgresql/tablespaces/fast"),
        symlink("up", "../outside"),
        directory("d"),
        symlink("d/evil", "../d/../.."),
        symlink("s2", "."),
        symlink("d/s1", "../s2/.."),
        symlink("a", "b"),
        symlink("b", "a"),
        symlink("self", "self"),
    ]
    assert check_members(members, DEFAULTS) == []


def test_a_symlink_with_an_empty_target_is_refused() -> None:
    assert check_members([symlink("empty-target", "")], DEFAULTS) == ["empty-target: symlink with an empty target"]


def test_a_member_below_a_symlink_is_refused_whatever_the_order() -> None:
    for members in (
        [symlink("etc", "data"), directory("data"), member("etc/passwd")],
        [member("etc/passwd"), directory("data"), symlink("etc", "data")],
        [symlink("etc", "/etc"), member("etc/passwd")],
        [symlink("etc", "/etc"), directory("etc/passwd")],
        [symlink("etc", "/etc"), symlink("etc/passwd", "x")],
        [member("f"), symlink("etc", "/etc"), hardlink("etc/passwd", "f")],
    ):
        problems = check_members(members, DEFAULTS)
        assert any("etc/passwd: lies below the symlink etc" in problem for problem in problems), problems


def test_a_member_below_a_file_is_refused() -> None:
    problems = check_members([member("f"), member("f/inside")], DEFAULTS)
    assert problems == ["f/inside: lies below f, which is a file"]


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        ([hardlink("h", "missing")], "not an earlier member"),
        ([hardlink("h", "later"), member("later")], "not an earlier member"),
        ([hardlink("h", "h")], "not an earlier member"),
        ([directory("d"), hardlink("h", "d")], "hardlink to the directory d"),
        ([hardlink("x", "y"), hardlink("y", "x"), hardlink("z", "y")], "not an earlier member"),
    ],
)
def test_hardlinks_must_name_an_earlier_file(members: list[Member], expected: str) -> None:
    problems = check_members(members, DEFAULTS)
    assert any(expected in problem for problem in problems), problems


def test_a_hardlink_through_another_hardlink_is_fine() -> None:
    assert check_members([member("f"), hardlink("h1", "f"), hardlink("h2", "h1")], DEFAULTS) == []


def test_a_hardlink_to_a_symlink_links_the_symlink_itself() -> None:
    # linkat without AT_SYMLINK_FOLLOW: the new name is the symlink's inode, nothing is followed
    assert check_members([symlink("s", "/etc/shadow"), hardlink("h", "s")], DEFAULTS) == []


def test_duplicates_and_a_non_directory_root_are_refused() -> None:
    assert check_members([member("a"), symlink("a", "/etc")], DEFAULTS) == ["a: appears twice in the archive"]
    assert check_members([member(".")], DEFAULTS) == [".: the root of the archive is a file, not a directory"]


def test_devices_and_fifos_only_when_the_policy_allows_them() -> None:
    special = [
        member("null", MemberKind.CHARACTER_DEVICE),
        member("disk", MemberKind.BLOCK_DEVICE),
        member("pipe", MemberKind.FIFO),
    ]
    problems = check_members(special, DEFAULTS)
    assert problems == [
        "null: character device (allow with restore.allow_devices in the policy)",
        "disk: block device (allow with restore.allow_devices in the policy)",
        "pipe: FIFO (allow with restore.allow_fifos in the policy)",
    ]
    assert check_members(special, RestoreSettings(allow_devices=True, allow_fifos=True)) == []
    assert check_members(special, RestoreSettings(allow_fifos=True)) == problems[:2]


def test_acl_text_becomes_the_kernel_xattr() -> None:
    text = "user::rw-\nuser:1234:r--\ngroup::r--\ngroup:55:rw-\nmask::rw-\nother::r--\n"
    # what setfacl -m u:1234:r,g:55:rw gave on this kernel (getfattr -e hex system.posix_acl_access)
    expected = bytes.fromhex(
        "0200000001000600ffffffff02000400d204000004000400ffffffff080006003700000010000600ffffffff20000400ffffffff"
    )
    assert acl_to_xattr(text, "access") == expected
    assert acl_to_xattr("u::rw-\ng::r--\no::---\n", "access") is None  # the mode bits hold it
    assert acl_to_xattr("user::rwx\ngroup::r-x\nother::r-x\n", "default") is not None
    assert acl_to_xattr("user::rw-\nuser:root:r-- #effective:r--\ngroup::r--\nmask::r--\nother::---", "access")


@pytest.mark.parametrize("text", ["user::rw-\nuser:no-such-user-here:r--\n", "user:rw-\n", "user::rwz\n"])
def test_acl_text_that_cannot_be_encoded_is_an_error(text: str) -> None:
    with pytest.raises(AclError):
        acl_to_xattr(text, "access")


def test_the_restore_rules_come_from_the_policy_a_backup_gives_the_volume(tmp_path: Path) -> None:
    """The owner is decided as plan_volumes decides it: an exact name beats a glob, whatever the file order;
    two globs matching the volume are refused, as a backup refuses them."""
    (tmp_path / "a-glob.yaml").write_text("volumes: ['app_*']\nstrategy: live\nrestore: {allow_fifos: true}\n")
    (tmp_path / "b-exact.yaml").write_text("volumes: [app_db]\nstrategy: live\nrestore: {allow_devices: true}\n")
    archive = tmp_path / "no-such.tar.zst"
    assert restore_settings_for(tmp_path, "app_db", archive) == RestoreSettings(allow_devices=True)
    assert restore_settings_for(tmp_path, "app_cache", archive) == RestoreSettings(allow_fifos=True)
    assert restore_settings_for(tmp_path, "other", archive) == DEFAULTS
    (tmp_path / "c-glob.yaml").write_text("volumes: ['app_c*']\nstrategy: live\n")
    with pytest.raises(PolicyError, match="'app_cache' is matched by policy"):
        restore_settings_for(tmp_path, "app_cache", archive)
