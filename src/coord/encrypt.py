"""Encryption with GnuPG (python-gnupg), streamed in both directions.

Backup: the compressed stream goes from the archiving pipeline straight into gpg's stdin, and gpg writes the
`.gpg.partial` file itself (`output=`), so there is never a plaintext archive on disk nor ciphertext in memory:

    tar | zstd  --pipe-->  coord (sha256 of the compressed stream)  --python-gnupg-->  gpg --output X.gpg.partial

Restore and verify: the file is read by coord (hashed), fed to `gpg --decrypt`, and gpg's output is handed chunk by
chunk (`on_data`, returning False so python-gnupg keeps nothing) to the decompressor.

What the manifest records, and why both: `sha256`/`size` are those of the file on disk (`sha256sum X.tar.zst.gpg`
checks it without any key); `stream_sha256`/`stream_size` are those of the compressed tar stream inside it (what
`gpg -d X.tar.zst.gpg | sha256sum` prints), so a decrypting check proves gpg gave back exactly what was written.

Pitfalls handled here (docs/platform.md, python-gnupg): secrets go to gpg on stdin, never argv; an empty
passphrase is refused (gpg would take the first line of the data as the passphrase); imported recipient keys are
used with `always_trust` (an untrusted recipient makes gpg exit 2 mid-stream); gpg's exit status is checked, never
only its status text (a full disk gives "encryption ok" with exit 2); compression is off (`--compress-algo none`:
the archive is already compressed); `--no-symkey-cache` keeps the agent from answering a later decryption with a
cached passphrase; the GnuPG home coord manages has a short path, mode 0700, and its gpg-agent is killed when coord
exits.
"""

from __future__ import annotations

import atexit
import io
import logging
import os
import re
import stat
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import gnupg

from coord.errors import EncryptionError
from coord.policy import EncryptSettings
from coord.stream_types import ByteReader

log = logging.getLogger("coord.encrypt")
# python-gnupg logs gpg's failures with tracebacks at ERROR level; coord reports them itself, in gpg's words.
logging.getLogger("gnupg").setLevel(logging.CRITICAL)

CHUNK_SIZE = 1 << 20
SYMMETRIC_CIPHER = "AES256"
DEFAULT_STATE_DIR = Path("/var/lib/coord")  # --state-dir, env COORD_STATE_DIR: coord's GnuPG home lives there
GPG_SUFFIX = ".gpg"
ENCRYPT_OPTIONS = ["--compress-algo", "none", "--no-symkey-cache"]
# loopback: gpg never starts a pinentry (coord runs unattended); without a passphrase it fails at once instead.
DECRYPT_OPTIONS = ["--no-symkey-cache", "--pinentry-mode", "loopback"]
# gpg-agent's sockets live in the home when /run/user/<uid> does not exist; a unix socket path is at most 107
# bytes and the longest socket name is 'S.gpg-agent.browser'. A ~126-character home made the agent fail.
MAX_HOME_LENGTH = 80


class EncryptionMethod(StrEnum):
    PUBLIC_KEY = "public-key"
    PASSPHRASE = "passphrase"


@dataclass(frozen=True)
class Encryption:
    """How one volume's archive is encrypted: to `recipients` (fingerprints) or with the passphrase in a file."""

    method: EncryptionMethod
    home: Path
    recipients: tuple[str, ...] = ()
    passphrase_file: Path | None = None

    def to_manifest(self) -> dict[str, Any]:
        """What the manifest says about the encryption: enough to restore, nothing secret."""
        if self.method is EncryptionMethod.PUBLIC_KEY:
            return {"tool": "gnupg", "method": self.method.value, "recipients": list(self.recipients)}
        return {"tool": "gnupg", "method": self.method.value, "cipher": SYMMETRIC_CIPHER}


def managed_home(state_dir: Path) -> Path:
    """The GnuPG home coord keeps under its state directory (created, mode 0700). Raises EncryptionError."""
    home = state_dir.absolute() / "gnupg"
    if len(str(home)) > MAX_HOME_LENGTH:
        raise EncryptionError(
            f"GnuPG home {home} is {len(str(home))} characters long; gpg-agent cannot use sockets under so long a "
            f"path (at most {MAX_HOME_LENGTH}): use a shorter --state-dir (env COORD_STATE_DIR)"
        )
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(home, 0o700)
    except OSError as error:
        raise EncryptionError(
            f"cannot create GnuPG home {home}: {error.strerror} (set --state-dir or COORD_STATE_DIR to a directory "
            "coord may write)"
        ) from None
    return home


def read_passphrase(path: Path) -> str:
    """The passphrase: the first line of `path`, as `gpg --passphrase-file` reads it. Raises EncryptionError."""
    try:
        data = path.read_bytes()
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as error:
        raise EncryptionError(f"cannot read passphrase file {path}: {error.strerror}") from None
    if mode & 0o077:
        log.warning(
            "passphrase file %s has mode %04o: users other than its owner can %s it; run: chmod 600 %s",
            path,
            mode,
            "read" if mode & 0o044 else "change",
            path,
        )
    first_line = data.split(b"\n", 1)[0]
    try:
        passphrase = first_line.decode("utf-8")
    except UnicodeDecodeError:
        raise EncryptionError(f"passphrase file {path}: the first line is not UTF-8 text") from None
    if not passphrase:
        # Never hand gpg an empty passphrase: it then reads the first line of the DATA as the passphrase.
        raise EncryptionError(f"passphrase file {path}: the first line is empty; it must hold the passphrase")
    if "\r" in passphrase or "\x00" in passphrase:
        raise EncryptionError(
            f"passphrase file {path}: the first line holds a carriage return or NUL (Windows line ending?); "
            "`gpg --passphrase-file` would read a different passphrase than coord"
        )
    return passphrase


def kill_agent(home: Path) -> None:
    """Stop the gpg-agent of `home` (one lingers per home after gpg used it)."""
    subprocess.run(
        ["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )


_agents_to_kill: set[Path] = set()


def _kill_agents_at_exit() -> None:
    for home in sorted(_agents_to_kill):
        kill_agent(home)
    _agents_to_kill.clear()


def _stop_agent_at_exit(home: Path) -> None:
    """Kill the agent of a home coord manages when this process exits, not after each use: starting an agent
    costs about a second, and one run encrypts, reads back and may restore several archives."""
    if not _agents_to_kill:
        atexit.register(_kill_agents_at_exit)
    _agents_to_kill.add(home)


def _gpg(home: Path | None) -> gnupg.GPG:
    try:
        # utf-8: python-gnupg's default latin-1 breaks non-ASCII passphrases (docs/platform.md).
        gpg = gnupg.GPG(gnupghome=str(home) if home else None, encoding="utf-8")
    except (OSError, ValueError) as error:
        raise EncryptionError(f"cannot run gpg ({error}); install GnuPG (Debian: apt-get install gnupg)") from None
    gpg.buffer_size = CHUNK_SIZE  # python-gnupg copies 16 KB at a time by default
    return gpg


def prepare_encryption(settings: EncryptSettings, state_dir: Path) -> Encryption:
    """Turn a policy's `encrypt:` into an Encryption: import the recipients' keys, or check the passphrase file.

    Public keys are imported into the GnuPG home coord manages; every primary key in the file becomes a recipient
    (by fingerprint). Raises EncryptionError with what to fix.
    """
    home = managed_home(state_dir)
    if settings.passphrase_file is not None:
        read_passphrase(settings.passphrase_file)
        return Encryption(EncryptionMethod.PASSPHRASE, home, passphrase_file=settings.passphrase_file)
    assert settings.recipient_key_file is not None
    key_file = settings.recipient_key_file
    try:
        key_data = key_file.read_bytes()
    except OSError as error:
        raise EncryptionError(f"cannot read recipient key file {key_file}: {error.strerror}") from None
    _stop_agent_at_exit(home)
    imported = _gpg(home).import_keys(key_data)
    fingerprints = tuple(sorted({fpr for fpr in imported.fingerprints if fpr}))
    if not fingerprints:
        raise EncryptionError(
            f"recipient key file {key_file} holds no OpenPGP public key (expected ASCII-armored "
            "'-----BEGIN PGP PUBLIC KEY BLOCK-----', as `gpg --armor --export KEYID` writes)"
        )
    return Encryption(EncryptionMethod.PUBLIC_KEY, home, recipients=fingerprints)


def encryption_for(
    settings: EncryptSettings | None, state_dir: Path, default_passphrase_file: Path | None
) -> Encryption | None:
    """A policy's encryption; without `encrypt:` in the policy, symmetric encryption with the default passphrase
    file (`coord backup --passphrase-file`, env COORD_PASSPHRASE_FILE) when one is given; else None."""
    if settings is None and default_passphrase_file is not None:
        settings = EncryptSettings(passphrase_file=default_passphrase_file)
    return prepare_encryption(settings, state_dir) if settings is not None else None


# gpg's informational lines, dropped from error messages (they say nothing about what went wrong).
_GPG_CHATTER = re.compile(r"^(\S+ encrypted data|encrypted with \d+ passphrases?|using .* cipher.*)$")


def _gpg_says(result: Any) -> str:
    """gpg's own words from a result: stderr without status lines and chatter, deduplicated, one line."""
    said = []
    for raw in (getattr(result, "stderr", "") or "").splitlines():
        line = raw.strip().removeprefix("gpg: ")
        if line and not line.startswith("[GNUPG:]") and not _GPG_CHATTER.match(line) and line not in said:
            said.append(line)
    return "; ".join(said) or f"gpg exited {getattr(result, 'returncode', '?')} ({getattr(result, 'status', '')})"


def _run_crypt(gpg: gnupg.GPG, call: Callable[[], Any]) -> Any:
    """Run an encrypt_file/decrypt_file call and return its result, also when python-gnupg raises.

    When gpg stops reading its input early (bad recipient, full disk, wrong passphrase), python-gnupg's copying
    thread fails with BrokenPipeError and encrypt_file re-raises it, losing the result that holds gpg's reason.
    The result object is captured as it is created, so the reason is still there to report.
    """
    captured: list[Any] = []

    class CapturedCrypt(gnupg.Crypt):  # type: ignore[misc]  # python-gnupg has no types: Crypt is Any to mypy
        def __init__(self, owner: gnupg.GPG) -> None:
            super().__init__(owner)
            captured.append(self)

    gpg.result_map = {**gpg.result_map, "crypt": CapturedCrypt}
    try:
        return call()
    except OSError as error:
        if not captured:
            raise EncryptionError(f"gpg could not be run: {error}") from None
        result = captured[-1]
        if result.returncode is None:
            result.returncode = 2
        return result


class _StoppableReader:
    """A file wrapper whose reads return end-of-file once `stop()` was called (so gpg ends early)."""

    def __init__(self, source: ByteReader) -> None:
        self.source = source
        self.stopped = False

    def read(self, size: int = -1) -> bytes:
        if self.stopped:
            return b""
        return self.source.read(size)

    def stop(self) -> None:
        self.stopped = True


def encrypt_stream_to(stream: ByteReader, output: Path, encryption: Encryption) -> None:
    """Read `stream` to its end, encrypting it into `output`, which gpg opens for writing (a file, or a FIFO a
    reader drains: backup/upload.py). Raises EncryptionError."""
    result = _encrypt(stream, output, encryption)
    if result.returncode != 0:
        raise EncryptionError(f"gpg could not encrypt to {output}: {_gpg_says(result)}")


def encrypt_to_file(stream: ByteReader, output: Path, encryption: Encryption) -> None:
    """Read `stream` to its end, encrypting it into `output` (gpg writes the file). Raises EncryptionError.

    On failure `output` may hold a partial file; the caller removes it (it is always a `.partial` name).
    """
    encrypt_stream_to(stream, output, encryption)
    try:
        # gpg closes the file without fsync; a backup that vanishes on power loss is no backup.
        descriptor = os.open(output, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    except OSError as error:
        raise EncryptionError(f"cannot sync {output}: {error.strerror}") from None


def _encrypt(stream: ByteReader, output: Path, encryption: Encryption) -> Any:
    """gpg's result of encrypting `stream` into `output`."""
    gpg = _gpg(encryption.home)
    options: dict[str, Any] = {"armor": False, "output": str(output), "extra_args": ENCRYPT_OPTIONS}
    if encryption.method is EncryptionMethod.PASSPHRASE:
        assert encryption.passphrase_file is not None
        options.update(symmetric=SYMMETRIC_CIPHER, passphrase=read_passphrase(encryption.passphrase_file))
        recipients: list[str] | None = None
    else:
        options.update(always_trust=True)
        recipients = list(encryption.recipients)
    _stop_agent_at_exit(encryption.home)
    return _run_crypt(gpg, lambda: gpg.encrypt_file(stream, recipients, **options))


def warm_up(encryption: Encryption) -> None:
    """Encrypt nothing with `encryption`, before any container is paused: proves gpg, its keys and the passphrase
    work, and starts the home's gpg-agent (about 0.75 s here), which would otherwise start inside the pause.
    Raises EncryptionError."""
    with tempfile.TemporaryDirectory(prefix="coord-gpg-") as scratch:
        result = _encrypt(io.BytesIO(b""), Path(scratch) / "warm-up.gpg", encryption)
    if result.returncode != 0:
        to = f"to {', '.join(encryption.recipients)}" if encryption.recipients else "with the passphrase"
        fix = ": renew or replace the key" if encryption.recipients else ""
        raise EncryptionError(f"gpg cannot encrypt {to} ({_gpg_says(result)}); nothing was paused or stopped{fix}")


@dataclass(frozen=True)
class Decryption:
    """What decrypting needs: a GnuPG home holding the secret key (or any home for a passphrase), a passphrase.

    `passphrase` unlocks a symmetric archive or a passphrase-protected secret key. `managed` homes are coord's
    own: their agent is killed when coord exits; an operator's home (--gpg-home, ~/.gnupg) is left as it was.
    """

    home: Path | None
    passphrase: str | None = None
    managed: bool = False

    def describe_home(self) -> str:
        return str(self.home) if self.home else "the default GnuPG home ($GNUPGHOME or ~/.gnupg)"


def decryption_for(gpg_home: Path | None, passphrase_file: Path | None, state_dir: Path) -> Decryption:
    """The Decryption for the --gpg-home / --passphrase-file options. Raises EncryptionError."""
    passphrase = read_passphrase(passphrase_file) if passphrase_file else None
    if gpg_home is not None:
        if not gpg_home.is_dir():
            raise EncryptionError(f"GnuPG home {gpg_home} does not exist or is not a directory (--gpg-home)")
        return Decryption(gpg_home, passphrase)
    if passphrase is not None or not default_home_exists():
        # Without a home of its own (or with only a passphrase), gpg would create ~/.gnupg: coord writes state
        # only under --state-dir, so it decrypts with its own (then empty) home there.
        return Decryption(managed_home(state_dir), passphrase, managed=True)
    return Decryption(None)


def default_home_exists() -> bool:
    """Whether the GnuPG home gpg uses by default ($GNUPGHOME, else ~/.gnupg) is there."""
    home = os.environ.get("GNUPGHOME") or os.path.expanduser("~/.gnupg")
    return os.path.isdir(home)


def decrypt_stream(source: ByteReader, sink: Callable[[bytes], None], decryption: Decryption, name: str) -> None:
    """Decrypt `source` chunk by chunk into `sink`; nothing is held in memory. Raises EncryptionError.

    If `sink` raises, decryption stops early and that exception is re-raised (the first one).
    """
    gpg = _gpg(decryption.home)
    reader = _StoppableReader(source)
    sink_failures: list[BaseException] = []

    def on_data(chunk: bytes) -> bool:
        # Must never raise: python-gnupg would then keep the chunk in memory and carry on.
        if chunk and not sink_failures:
            try:
                sink(chunk)
            except BaseException as error:  # re-raised below, once gpg has ended
                sink_failures.append(error)
                reader.stop()
        return False

    gpg.on_data = on_data
    if decryption.managed and decryption.home is not None:
        _stop_agent_at_exit(decryption.home)
    result = _run_crypt(
        gpg,
        lambda: gpg.decrypt_file(
            reader, passphrase=decryption.passphrase, always_trust=True, extra_args=DECRYPT_OPTIONS
        ),
    )
    if sink_failures:
        raise sink_failures[0]
    if result.returncode != 0:
        raise EncryptionError(_decryption_failure(result, decryption, name))


def _decryption_failure(result: Any, decryption: Decryption, name: str) -> str:
    stderr = getattr(result, "stderr", "") or ""
    said = _gpg_says(result)
    if "NEED_PASSPHRASE_SYM" in stderr:
        if decryption.passphrase is None:
            return f"{name} is encrypted with a passphrase: pass --passphrase-file FILE (or set COORD_PASSPHRASE_FILE)"
        if "BAD_PASSPHRASE" in stderr or "Bad session key" in stderr:
            return f"cannot decrypt {name}: wrong passphrase (gpg says: {said})"
    if "NO_SECKEY" in stderr or "No secret key" in stderr:
        return (
            f"cannot decrypt {name}: no secret key for it in {decryption.describe_home()}; pass --gpg-home DIR "
            f"with the secret key of a recipient (gpg says: {said})"
        )
    if "BAD_PASSPHRASE" in stderr or "Bad passphrase" in stderr or "No passphrase given" in stderr:
        return (
            f"cannot decrypt {name}: the secret key is protected by a passphrase that was missing or wrong; pass it "
            f"with --passphrase-file (gpg says: {said})"
        )
    return f"cannot decrypt {name}: {said}"
