"""Fixtures shared by the encryption, restore and end-to-end tests (a pytest plugin: `pytest_plugins`).

Throw-away GnuPG keys and homes (real gpg, short paths, agents killed afterwards), a passphrase file, and a
source tree with everything a restore must give back exactly (trees.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PASSPHRASE = "correct horse battery staple, ünïcode too"


def short_directory(prefix: str) -> Path:
    """A new directory with a short path under /tmp (gpg-agent's sockets must fit in 107 bytes), mode 0700."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(path, 0o700)
    return path


def kill_agent(home: Path) -> None:
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], capture_output=True, check=False)


def remove_home(home: Path) -> None:
    kill_agent(home)
    shutil.rmtree(home, ignore_errors=True)


@dataclass(frozen=True)
class ThrowawayKey:
    home: Path  # holds the secret key: what an operator passes as --gpg-home
    public_key_file: Path  # ASCII-armored public key: what a policy's recipient_key_file names
    fingerprint: str


def generate_key(home: Path, name: str = "coord test", *, expired: bool = False) -> ThrowawayKey:
    """A new unprotected key pair in `home` (gpg --quick-gen-key), with its public key exported armored.
    `expired`: made as of 2020-01-01 with one day of validity, so it expired long ago."""
    past = ["--faked-system-time", "20200101T000000!"] if expired else []
    subprocess.run(
        [
            "gpg",
            "--homedir",
            str(home),
            *past,
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--quick-gen-key",
            f"{name} <test@coord.invalid>",
            "default",
            "default",
            "1d" if expired else "never",
        ],
        check=True,
        capture_output=True,
    )
    listing = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--with-colons", "--list-secret-keys"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
    public = home / "public.asc"
    exported = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--armor", "--export", fingerprint], check=True, capture_output=True
    ).stdout
    public.write_bytes(exported)
    return ThrowawayKey(home, public, fingerprint)


@pytest.fixture(scope="session")
def throwaway_key() -> Iterator[ThrowawayKey]:
    """A key pair for the whole session; its home is what `--gpg-home` gets."""
    home = short_directory("ck")
    try:
        yield generate_key(home)
    finally:
        remove_home(home)


@pytest.fixture(scope="session")
def state_dir() -> Iterator[Path]:
    """coord's --state-dir: short, so that <state>/gnupg suits gpg-agent."""
    directory = short_directory("cs")
    try:
        yield directory
    finally:
        remove_home(directory / "gnupg")
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def empty_gpg_home() -> Iterator[Path]:
    """A GnuPG home with no key at all: the 'missing key' case."""
    home = short_directory("ce")
    try:
        yield home
    finally:
        remove_home(home)


@pytest.fixture
def passphrase_file(tmp_path: Path) -> Path:
    """A passphrase file as an operator keeps it: first line the passphrase, mode 0600."""
    path = tmp_path / "passphrase"
    path.write_text(PASSPHRASE + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A directory holding trees.populate_tree's varied tree (owners, modes, links, mtimes)."""
    from trees import populate_tree  # imported here: this plugin loads before the test modules' imports

    root = tmp_path / "source"
    root.mkdir()
    populate_tree(root)
    return root
