"""Real rclone protocol servers on loopback for tests: `rclone serve s3|sftp|webdav` over a temporary directory.

`serve_remote(kind, directory)` starts one on 127.0.0.1 at a free port with credentials, waits until it answers,
and yields a `ServedRemote`: the rclone remote name and the target path to use, the RCLONE_CONFIG_* environment that
defines the remote (and the same as a generated rclone.conf), the served directory, the password (so a test can
check it never shows), and `stop()`/`start()` to kill and bring back the server (same port, same files). Leaving
the block stops it. The `rclone_server` fixture in tests/conftest.py gives one per test module and kind.

Nothing here is a mock: clients talk S3, SFTP or WebDAV to a real server over TCP.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from coord.targets.rclone import rclone_binary

KINDS = ("s3", "sftp", "webdav")
READY_WAIT_S = 30.0  # a server that does not answer by then failed to start (not an assertion about speed)
USER = "coord-test"
BUCKET = "coord-bucket"  # s3: a top-level directory of the served one is a bucket


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def obscure(password: str) -> str:
    """rclone's reversible obscuring, which its config wants for sftp/webdav passwords."""
    return subprocess.run(
        [rclone_binary(), "obscure", password], capture_output=True, check=True, text=True
    ).stdout.strip()


@dataclass
class ServedRemote:
    """One running rclone server and how to reach it as an rclone remote."""

    kind: str
    name: str  # the rclone remote's name (lower case: RCLONE_CONFIG_<NAME>_* defines it)
    directory: Path  # what the server serves
    password: str  # the secret (s3: the secret access key)
    port: int
    settings: dict[str, str]  # the remote's config keys (passwords obscured)
    read_only: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    log: Path | None = None

    @property
    def path(self) -> str:
        """The rclone path a target uses: the served directory's root (s3: the bucket)."""
        return f"{self.name}:{BUCKET}" if self.kind == "s3" else f"{self.name}:"

    def under(self, *parts: str) -> str:
        """The rclone path of `parts` below the target's root."""
        return self.path + ("" if self.path.endswith(":") else "/") + "/".join(parts)

    @property
    def local_root(self) -> Path:
        """Where the target's files land on disk."""
        return self.directory / BUCKET if self.kind == "s3" else self.directory

    def environment(self, **overrides: str) -> dict[str, str]:
        """RCLONE_CONFIG_<NAME>_<KEY> variables defining the remote (keys in `overrides` replaced)."""
        settings = {**self.settings, **overrides}
        return {f"RCLONE_CONFIG_{self.name.upper()}_{key.upper()}": value for key, value in settings.items()}

    def write_config(self, path: Path, **overrides: str) -> Path:
        """An rclone.conf at `path` defining the remote (keys in `overrides` replaced)."""
        settings = {**self.settings, **overrides}
        path.write_text(f"[{self.name}]\n" + "".join(f"{key} = {value}\n" for key, value in settings.items()))
        path.chmod(0o600)
        return path

    def wrong_password(self) -> dict[str, str]:
        """`overrides` for environment()/write_config() that give a wrong password."""
        if self.kind == "s3":
            return {"secret_access_key": "not-the-secret-" + self.password[:0] + "x9"}
        return {"pass": obscure("not-the-password")}

    def command(self) -> list[str]:
        address = f"127.0.0.1:{self.port}"
        base = [rclone_binary(), "serve", self.kind, "--addr", address, "--config", "/dev/null"]
        if self.kind == "s3":
            base += ["--auth-key", f"{USER},{self.password}"]
        else:
            base += ["--user", USER, "--pass", self.password]
        if self.kind == "sftp":  # a host key generated into the test's own cache directory, no ~/.ssh keys
            base += ["--cache-dir", str(self.directory.parent / "rclone-cache"), "--authorized-keys", "/dev/null"]
        if self.read_only:
            base += ["--read-only"]
        return [*base, str(self.directory)]

    def start(self, *, read_only: bool = False) -> None:
        """Start the server (again), on the same port and directory; returns once it accepts connections."""
        if self.process is not None:
            self.stop()
        self.read_only = read_only
        assert self.log is not None
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
            )
        deadline = time.monotonic() + READY_WAIT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"rclone serve {self.kind} exited {self.process.returncode}: {self.log.read_text()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"rclone serve {self.kind} did not answer on port {self.port}: {self.log.read_text()}")

    def stop(self) -> None:
        """Kill the server (SIGKILL, as a crash would) and wait for it."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.process = None


def _settings(kind: str, port: int, password: str) -> dict[str, str]:
    if kind == "s3":
        return {
            "type": "s3",
            "provider": "Rclone",
            "endpoint": f"http://127.0.0.1:{port}",
            "access_key_id": USER,
            "secret_access_key": password,
        }
    if kind == "sftp":
        return {
            "type": "sftp",
            "host": "127.0.0.1",
            "port": str(port),
            "user": USER,
            "pass": obscure(password),
            "shell_type": "unix",
            "md5sum_command": "md5sum",
            "sha1sum_command": "sha1sum",
        }
    url = f"http://127.0.0.1:{port}"
    return {"type": "webdav", "url": url, "vendor": "rclone", "user": USER, "pass": obscure(password)}


@contextlib.contextmanager
def serve_remote(kind: str, directory: Path, name: str | None = None) -> Iterator[ServedRemote]:
    """Serve `directory` (created) with `rclone serve KIND` on loopback for the block; see the module's text."""
    if kind not in KINDS:
        raise ValueError(f"unknown server kind {kind!r}; one of {', '.join(KINDS)}")
    directory.mkdir(parents=True, exist_ok=True)
    if kind == "s3":
        (directory / BUCKET).mkdir(exist_ok=True)
    password = f"pw-{os.urandom(6).hex()}"
    port = free_port()
    remote = ServedRemote(
        kind=kind,
        name=name or f"test{kind}",
        directory=directory,
        password=password,
        port=port,
        settings=_settings(kind, port, password),
        log=directory.parent / f"{kind}-server.log",
    )
    remote.start()
    try:
        yield remote
    finally:
        remote.stop()
