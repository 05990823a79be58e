"""A file tree with everything a restore must give back exactly, and a snapshot to compare two trees by.

The snapshot holds, for every entry (the root included): type, permission bits (setuid/sticky too), numeric
owner, mtime in whole seconds (GNU tar format keeps seconds), size and sha256 of regular files, symlink targets,
device numbers, and which names share an inode (hardlinks). Two trees with equal snapshots are the same tree.
With `attributes=True` (archives in pax format) it holds as well: the mtime in nanoseconds, every extended
attribute with its value (security.capability and the ACLs, system.posix_acl_*, included) and the bytes a
regular file has allocated (a sparse file restored fully allocated differs).
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from pathlib import Path

# A fixed past time per entry, so a restore that forgets mtimes cannot pass by accident.
BASE_TIME = 1_600_000_000


def populate_tree(root: Path, *, big_bytes: int = 2_000_000, fifo: bool = False, device: bool = False) -> None:
    """Fill `root` (an existing, empty directory) with a varied tree. Needs root (chown, mknod)."""
    entries: list[tuple[Path, int]] = []  # (path, mtime offset), applied deepest first at the end

    def directory(relative: str, mode: int, owner: tuple[int, int]) -> Path:
        path = root / relative
        path.mkdir()
        os.chown(path, *owner)
        os.chmod(path, mode)
        entries.append((path, len(entries)))
        return path

    def regular(relative: str, data: bytes, mode: int, owner: tuple[int, int]) -> Path:
        path = root / relative
        path.write_bytes(data)
        os.chown(path, *owner)
        os.chmod(path, mode)
        entries.append((path, len(entries)))
        return path

    def symlink(relative: str, target: str, owner: tuple[int, int]) -> None:
        path = root / relative
        os.symlink(target, path)
        os.lchown(path, *owner)
        entries.append((path, len(entries)))

    directory("data", 0o700, (999, 999))
    regular("data/file.txt", b"postgres would keep its heap here\n", 0o600, (999, 999))
    regular("data/big.bin", os.urandom(big_bytes), 0o644, (999, 998))
    regular("data/empty", b"", 0o640, (70, 70))
    regular("setuid-tool", b"#!/bin/sh\necho hi\n", 0o4755, (0, 0))
    regular("no-access", b"secret", 0o000, (1234, 5678))
    directory("sticky", 0o1777, (0, 0))
    regular("sticky/owned-by-other", b"x" * 100, 0o644, (4321, 4321))
    directory("empty-dir", 0o750, (1234, 5678))
    directory("spaces & ümlauts", 0o755, (0, 0))
    regular("spaces & ümlauts/naïve file.txt", "café\n".encode(), 0o644, (0, 0))
    symlink("link-to-file", "data/file.txt", (999, 999))
    symlink("link-to-dir", "data", (0, 0))
    symlink("dangling", "nowhere/at/all", (0, 0))
    symlink("sticky/up-and-over", "../data/empty", (4321, 4321))
    os.link(root / "data/file.txt", root / "hardlink-to-file")
    os.link(root / "data/file.txt", root / "sticky/second-hardlink")
    entries.append((root / "hardlink-to-file", len(entries)))
    if fifo:
        os.mkfifo(root / "data/a-fifo", 0o620)
        os.chown(root / "data/a-fifo", 999, 999)
        entries.append((root / "data/a-fifo", len(entries)))
    if device:
        os.mknod(root / "null-device", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        entries.append((root / "null-device", len(entries)))
    os.chown(root, 70, 70)
    os.chmod(root, 0o750)
    # mtimes last, deepest first, so creating children does not move a directory's mtime again.
    for path, offset in sorted(entries, key=lambda item: len(item[0].parts), reverse=True):
        os.utime(path, (BASE_TIME + offset * 3600, BASE_TIME + offset * 3600), follow_symlinks=False)
    os.utime(root, (BASE_TIME - 86400, BASE_TIME - 86400))


def populate_links(root: Path) -> None:
    """Add links that point anywhere (finding 7 of issue 11): a Postgres tablespace's absolute link, `../` links
    leaving the volume, a chain that leaves it, loops. A restore recreates them as links, following none."""
    (root / "pg_tblspc").mkdir()
    os.symlink("/var/lib/postgresql/tablespaces/fast", root / "pg_tblspc" / "16385")
    os.symlink("../../outside/of/the/volume", root / "pg_tblspc" / "up-and-out")
    os.symlink(".", root / "here")
    os.symlink("../here/..", root / "pg_tblspc" / "through-here")
    os.symlink("loop-b", root / "loop-a")
    os.symlink("loop-a", root / "loop-b")
    os.symlink("self", root / "self")
    for path in (root / "pg_tblspc", root):
        os.utime(path, (BASE_TIME, BASE_TIME), follow_symlinks=False)


SPARSE_SIZE = 1 << 30  # a 1 GiB sparse file, as in the issue: a few KiB of data


def populate_attributes(root: Path) -> None:
    """Add what only a pax archive with --xattrs --acls --sparse keeps: extended attributes (user.*, trusted.*,
    a binary value), a file capability (setcap), access and default ACLs (setfacl), a sparse file, sub-second
    mtimes. Needs root, setfacl and setcap (scripts/bootstrap.sh installs them)."""
    attributes = root / "attributes"
    attributes.mkdir()
    tool = attributes / "ping-like"
    tool.write_bytes(b"\x7fELF pretend binary\n")
    tool.chmod(0o755)
    subprocess.run(["setcap", "cap_net_raw,cap_net_bind_service+ep", str(tool)], check=True)
    plain = attributes / "with-xattrs.txt"
    plain.write_text("tagged\n")
    os.setxattr(plain, "user.origin", b"coord test")
    os.setxattr(plain, "user.binary", bytes(range(256)))
    os.setxattr(plain, "trusted.overlay-like", b"y")
    shared = attributes / "shared.txt"
    shared.write_text("readable by uid 1234 and gid 55\n")
    subprocess.run(["setfacl", "-m", "u:1234:r,g:55:rw", str(shared)], check=True)
    inheriting = attributes / "inheriting"
    inheriting.mkdir()
    subprocess.run(["setfacl", "-d", "-m", "u:1234:rwx,g:55:rx", str(inheriting)], check=True)
    subprocess.run(["setfacl", "-m", "u:4321:rx", str(inheriting)], check=True)
    sparse = attributes / "sparse.img"
    with open(sparse, "wb") as handle:
        handle.truncate(SPARSE_SIZE)
        handle.seek(SPARSE_SIZE // 2)
        handle.write(b"data in the middle of a hole")
    paths = [tool, plain, shared, inheriting, sparse, attributes]
    for index, path in enumerate(paths):  # deepest first: the directory last
        nanoseconds = BASE_TIME * 1_000_000_000 + index * 1_000_000_007 + 123_456_789
        os.utime(path, ns=(nanoseconds, nanoseconds))
    nanoseconds = (BASE_TIME - 86400) * 1_000_000_000 + 987_654_321
    os.utime(root, ns=(nanoseconds, nanoseconds))


def _extended_attributes(path: Path) -> tuple[tuple[str, bytes], ...]:
    names = os.listxattr(path, follow_symlinks=False)
    return tuple(sorted((name, os.getxattr(path, name, follow_symlinks=False)) for name in names))


def snapshot_tree(root: Path, attributes: bool = False) -> dict[str, tuple]:
    """Everything about the tree under `root` that a restore must reproduce, by relative path ('.' for root);
    with `attributes`, also ns mtimes, extended attributes (ACLs, capabilities) and allocated bytes."""
    snapshot: dict[str, tuple] = {}
    inodes: dict[tuple[int, int], list[str]] = {}
    for directory, subdirectories, files in os.walk(root):
        for name in [".", *subdirectories, *files] if directory == str(root) else [*subdirectories, *files]:
            path = Path(directory) / name if name != "." else root
            relative = "." if path == root else str(path.relative_to(root))
            info = os.lstat(path)
            kind = stat.S_IFMT(info.st_mode)
            detail: object = None
            if stat.S_ISREG(kind):
                detail = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(kind):
                detail = os.readlink(path)
            elif stat.S_ISCHR(kind) or stat.S_ISBLK(kind):
                detail = (os.major(info.st_rdev), os.minor(info.st_rdev))
            size = info.st_size if stat.S_ISREG(kind) else 0
            snapshot[relative] = (
                kind,
                stat.S_IMODE(info.st_mode),
                info.st_uid,
                info.st_gid,
                int(info.st_mtime),
                size,
                detail,
            )
            if attributes:
                allocated = info.st_blocks * 512 if stat.S_ISREG(kind) else 0
                snapshot[relative] += (info.st_mtime_ns, _extended_attributes(path), allocated)
            if not stat.S_ISDIR(kind) and info.st_nlink > 1:
                inodes.setdefault((info.st_dev, info.st_ino), []).append(relative)
    for names in inodes.values():
        group = tuple(sorted(names))
        for name in names:
            snapshot[name] = (*snapshot[name], group)
    return snapshot


def differences(expected: dict[str, tuple], actual: dict[str, tuple]) -> list[str]:
    """Human-readable differences between two snapshots (empty when identical)."""
    lines = []
    for name in sorted(set(expected) | set(actual)):
        if name not in actual:
            lines.append(f"missing: {name}")
        elif name not in expected:
            lines.append(f"extra: {name}")
        elif expected[name] != actual[name]:
            lines.append(f"differs: {name}: {expected[name]} != {actual[name]}")
    return lines
