"""Unit tests of the restore safety checks: names, member types, links. No archive, no file system."""

from __future__ import annotations

import pytest

from coord.policy import RestoreSettings
from coord.restore import Member, MemberKind, UnsafeMember, check_members, normalize_name, resolve_inside

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


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        ([symlink("evil", "/etc")], "absolute path /etc"),
        ([symlink("evil", "../outside")], "resolves outside"),
        ([directory("d"), symlink("d/evil", "../../outside")], "resolves outside"),
        ([directory("d"), symlink("d/evil", "../d/../..")], "resolves outside"),
        # Each link stays inside when read alone; followed through the other one it leaves the root.
        ([symlink("s2", "."), directory("d"), symlink("d/s1", "../s2/..")], "d/s1: symlink to ../s2/.. resolves"),
        ([symlink("a", "b"), symlink("b", "a")], "too deep or looping"),
        ([symlink("empty-target", "")], "empty target"),
    ],
)
def test_symlinks_leaving_the_volume_are_refused(members: list[Member], expected: str) -> None:
    problems = check_members(members, DEFAULTS)
    assert any(expected in problem for problem in problems), problems


def test_a_member_below_a_symlink_is_refused_whatever_the_order() -> None:
    for members in (
        [symlink("etc", "data"), directory("data"), member("etc/passwd")],
        [member("etc/passwd"), directory("data"), symlink("etc", "data")],
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
        ([symlink("s", "x"), hardlink("h", "s")], "hardlink to the symlink s"),
        ([hardlink("x", "y"), hardlink("y", "x"), hardlink("z", "y")], "not an earlier member"),
    ],
)
def test_hardlinks_must_name_an_earlier_file(members: list[Member], expected: str) -> None:
    problems = check_members(members, DEFAULTS)
    assert any(expected in problem for problem in problems), problems


def test_a_hardlink_through_another_hardlink_is_fine() -> None:
    assert check_members([member("f"), hardlink("h1", "f"), hardlink("h2", "h1")], DEFAULTS) == []


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


def test_resolve_inside_follows_links_like_the_kernel() -> None:
    links = {"cur": "releases/v2", "releases/v2": "../v2-real"}
    assert resolve_inside(".", "cur/file", links) == ["v2-real", "file"]
    assert resolve_inside(".", "cur/../..", links) is None
    assert resolve_inside("a/b", "../../c", {}) == ["c"]
    assert resolve_inside("a/b", "../../../c", {}) is None
    assert resolve_inside(".", "/abs", {}) is None
