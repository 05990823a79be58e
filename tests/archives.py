"""Helpers for tests that make archives as `coord backup` does, and restore them as an operator would by hand."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coord.archive import ArchiveSettings, StreamWriter, archive_suffix, compressor_command, create_archive, write_file
from coord.encrypt import Encryption, encrypt_to_file, prepare_encryption
from coord.excludes import ExcludeMatcher
from coord.policy import Compression, EncryptSettings

if TYPE_CHECKING:
    from sharedfixtures import ThrowawayKey


def encryption_of(kind: str, key: ThrowawayKey, passphrase_file: Path, state: Path) -> Encryption:
    if kind == "passphrase":
        return prepare_encryption(EncryptSettings(passphrase_file=passphrase_file), state)
    return prepare_encryption(EncryptSettings(recipient_key_file=key.public_key_file), state)


def plain_settings(compression: Compression, **options: Any) -> ArchiveSettings:
    """create_archive's settings as a policy that sets only `compression` gives them: nothing excluded, the
    compression's default command; `options` set ArchiveSettings' other fields (write, on_progress, ...)."""
    return ArchiveSettings(ExcludeMatcher.of([]), compressor_command(compression), **options)


def make_archive(source: Path, directory: Path, compression: Compression, encryption: Encryption | None) -> Path:
    """An archive made exactly as `coord backup` makes it (the runner's archiving step), published by rename."""
    name = "volume" + archive_suffix(compression) + (".gpg" if encryption else "")
    partial = directory / (name + ".partial")
    write: StreamWriter = functools.partial(encrypt_to_file, encryption=encryption) if encryption else write_file
    outcome = create_archive(source, partial, plain_settings(compression, write=write))
    assert not outcome.critical, outcome.critical
    partial.rename(directory / name)
    return directory / name


def decrypt_arguments(kind: str, key: ThrowawayKey, passphrase_file: Path, state: Path) -> list[str]:
    if kind == "passphrase":  # any home does; the test's own, not root's ~/.gnupg
        return [
            "--homedir",
            str(state / "gnupg"),
            "--pinentry-mode",
            "loopback",
            "--passphrase-file",
            str(passphrase_file),
        ]
    return ["--homedir", str(key.home)]


def restore_without_coord(archive: Path, target: Path, gpg_arguments: list[str]) -> None:
    """What docs/restore.md tells an operator to run: gpg -d X | zstd -d | tar -x (gzip -d for .tar.gz.gpg)."""
    decompress = "gzip -d" if ".tar.gz" in archive.name else "zstd -d"
    target.mkdir()
    gpg = " ".join(gpg_arguments)
    subprocess.run(
        f"set -o pipefail; gpg --batch {gpg} -d '{archive}' | {decompress} | tar -x --numeric-owner -C '{target}'",
        shell=True,
        executable="/bin/bash",
        check=True,
        capture_output=True,
    )
