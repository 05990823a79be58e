"""Streamed GnuPG encryption on real tar, zstd, gzip and gpg (no Docker): the operator's plain
`gpg -d | zstd -d | tar -x` gives back the exact tree; gpg compression is off; secrets never reach a command line;
bad passphrases, key files and state directories are refused before anything is encrypted.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from archives import decrypt_arguments, encryption_of, make_archive, restore_without_coord
from coord.encrypt import decryption_for, prepare_encryption
from coord.errors import EncryptionError
from coord.policy import Compression, EncryptSettings
from trees import differences, snapshot_tree

if TYPE_CHECKING:
    from sharedfixtures import ThrowawayKey

pytest_plugins = ["sharedfixtures"]  # throwaway_key, state_dir, empty_gpg_home, passphrase_file, source


@pytest.mark.parametrize("compression", [Compression.ZSTD, Compression.GZIP])
@pytest.mark.parametrize("kind", ["passphrase", "public-key"])
def test_an_encrypted_archive_restores_identically_without_coord(
    tmp_path: Path,
    source: Path,
    passphrase_file: Path,
    throwaway_key: ThrowawayKey,
    state_dir: Path,
    kind: str,
    compression: Compression,
) -> None:
    encryption = encryption_of(kind, throwaway_key, passphrase_file, state_dir)
    archive = make_archive(source, tmp_path, compression, encryption)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([archive.name, "source", "passphrase"])
    expected = snapshot_tree(source)

    by_hand = decrypt_arguments(kind, throwaway_key, passphrase_file, state_dir)
    restore_without_coord(archive, tmp_path / "by-hand", by_hand)
    assert differences(expected, snapshot_tree(tmp_path / "by-hand")) == []


def test_the_archive_is_openpgp_without_compression_and_secrets_stay_off_command_lines(
    tmp_path: Path, passphrase_file: Path, state_dir: Path
) -> None:
    big = tmp_path / "big"
    big.mkdir()
    (big / "random").write_bytes(os.urandom(20_000_000))  # long enough to catch gpg while it runs
    command_lines: list[bytes] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    with contextlib.suppress(OSError):  # the process ended meanwhile
                        command_lines.append(Path(f"/proc/{pid}/cmdline").read_bytes())
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        encryption = prepare_encryption(EncryptSettings(passphrase_file=passphrase_file), state_dir)
        archive = make_archive(big, tmp_path, Compression.ZSTD, encryption)
    finally:
        done.set()
        watcher.join()
    gpg_lines = [line for line in command_lines if b"gpg" in line and b"--symmetric" in line]
    assert gpg_lines, "the watcher never saw gpg running: the test proves nothing"
    passphrase = passphrase_file.read_text().splitlines()[0]
    assert not any(passphrase.encode() in line for line in command_lines)
    assert not any(str(passphrase_file).encode() in line for line in gpg_lines)

    head = archive.read_bytes()[:4]
    assert head[:4] != b"\x28\xb5\x2f\xfd"  # not a zstd frame: encrypted
    packets = subprocess.run(
        [
            "gpg",
            "--batch",
            "--homedir",
            str(state_dir / "gnupg"),
            "--pinentry-mode",
            "loopback",
            "--passphrase-file",
            str(passphrase_file),
            "--list-packets",
            str(archive),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert ":symkey enc packet:" in packets and "cipher 9" in packets  # 9 = AES256
    assert ":compressed packet:" not in packets  # --compress-algo none: zstd already did it


def test_an_empty_or_crlf_passphrase_is_refused(tmp_path: Path, state_dir: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\nthe data's first line must never become the passphrase\n")
    with pytest.raises(EncryptionError, match="first line is empty"):
        prepare_encryption(EncryptSettings(passphrase_file=empty), state_dir)
    windows = tmp_path / "windows"
    windows.write_bytes(b"secret\r\n")
    with pytest.raises(EncryptionError, match="carriage return"):
        prepare_encryption(EncryptSettings(passphrase_file=windows), state_dir)


def test_a_key_file_without_a_key_is_refused(tmp_path: Path, state_dir: Path) -> None:
    bogus = tmp_path / "not-a-key.asc"
    bogus.write_text("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnonsense\n-----END PGP PUBLIC KEY BLOCK-----\n")
    with pytest.raises(EncryptionError, match="holds no OpenPGP public key"):
        prepare_encryption(EncryptSettings(recipient_key_file=bogus), state_dir)


def test_a_state_dir_too_long_for_gpg_agent_is_refused(tmp_path: Path, passphrase_file: Path) -> None:
    deep = tmp_path / ("x" * 90)
    with pytest.raises(EncryptionError, match="use a shorter --state-dir"):
        prepare_encryption(EncryptSettings(passphrase_file=passphrase_file), deep)


def test_a_passphrase_file_others_can_read_is_warned_about(
    tmp_path: Path, state_dir: Path, passphrase_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    prepare_encryption(EncryptSettings(passphrase_file=passphrase_file), state_dir)
    assert not [record for record in caplog.records if record.name == "coord.encrypt"]  # 0600: quiet
    passphrase_file.chmod(0o644)
    prepare_encryption(EncryptSettings(passphrase_file=passphrase_file), state_dir)
    [warning] = [record.getMessage() for record in caplog.records if record.name == "coord.encrypt"]
    assert warning == (
        f"passphrase file {passphrase_file} has mode 0644: users other than its owner can read it; "
        f"run: chmod 600 {passphrase_file}"
    )


def test_decrypting_without_a_gnupg_home_writes_nothing_outside_the_state_dir(
    tmp_path: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "operator-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("GNUPGHOME", raising=False)
    decryption = decryption_for(None, None, state_dir)
    assert decryption.home == state_dir.absolute() / "gnupg" and decryption.managed
    (home / ".gnupg").mkdir()  # an operator's own home, once it exists, is used as it is
    assert decryption_for(None, None, state_dir).home is None


def test_an_expired_recipient_key_is_found_before_anything_is_paused(tmp_path: Path, state_dir: Path) -> None:
    from coord.encrypt import warm_up
    from sharedfixtures import generate_key

    home = tmp_path / "gh"
    home.mkdir(mode=0o700)
    key = generate_key(home, expired=True)
    with pytest.raises(EncryptionError) as refused:
        warm_up(prepare_encryption(EncryptSettings(recipient_key_file=key.public_key_file), state_dir))
    assert refused.value.message == (
        f"gpg cannot encrypt to {key.fingerprint} ({key.fingerprint}: skipped: Unusable public key; [stdin]: "
        "encryption failed: Unusable public key); nothing was paused or stopped: renew or replace the key"
    )
