"""Shared test fixtures: a real Docker engine, throw-away volumes and containers, and a way to run the CLI.

Every Docker object a test creates carries the label coord.test.session=<this session> and a unique name,
and is removed at the end of the test even when it fails (containers are unpaused first so removal cannot
hang). Nothing here mocks Docker: when no engine answers, the docker tests error out; they are never skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import pytest
from tests.rclone_servers import ServedRemote, serve_remote

REPO = Path(__file__).resolve().parent.parent
TEST_IMAGE = "coord-test/busybox:latest"
TEST_LABEL = "coord.test.session"
SESSION = uuid.uuid4().hex[:12]  # several pytest sessions may share one engine: each cleans up only its own


@dataclass
class CoordRun:
    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict:
        return json.loads(self.stdout)


def run_coord(
    *arguments: str, env: dict[str, str] | None = None, timeout: float = 300, prefix: tuple[str, ...] = ()
) -> CoordRun:
    """Run the real `coord` CLI in a subprocess, as an operator would."""
    environment = {**os.environ, **(env or {})}
    completed = subprocess.run(
        [*prefix, sys.executable, "-m", "coord", *arguments],
        capture_output=True,
        text=True,
        env=environment,
        timeout=timeout,
        cwd=REPO,
    )
    return CoordRun(completed.returncode, completed.stdout, completed.stderr)


def write_policy(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def flat_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    """The single-host layout on targets (`<target>/<volume>/`) even while tests/e2e/test_swarm.py has the shared
    test engine in swarm mode: other modules run meanwhile and must not see their archives move to
    `_nodes/<node>/`. test_swarm.py sets COORD_NODE_LAYOUT=auto for its own tests."""
    monkeypatch.setenv("COORD_NODE_LAYOUT", "flat")


@pytest.fixture(autouse=True)
def isolated_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own coord state directory (lock, journal), never the machine's /var/lib/coord."""
    state = tmp_path / "coord-state"
    monkeypatch.setenv("COORD_STATE_DIR", str(state))
    return state


@pytest.fixture(scope="session")
def docker_client():
    import docker

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as error:  # the docker tier must fail loudly, never skip
        pytest.fail(f"no Docker engine answers ({error}); run scripts/bootstrap.sh first", pytrace=False)
    try:
        client.images.get(TEST_IMAGE)
    except Exception:
        subprocess.run([str(REPO / "scripts" / "build-test-images.sh")], check=True)
    yield client
    _remove_leftovers(client)


def _remove_leftovers(client) -> None:
    mine = {"label": f"{TEST_LABEL}={SESSION}"}
    for container in client.containers.list(all=True, filters=mine):
        _force_remove(container)
    for volume in client.volumes.list(filters=mine):
        volume.remove(force=True)


def _force_remove(container) -> None:
    try:
        container.reload()
        if container.attrs["State"].get("Paused"):
            container.unpause()
        container.remove(force=True)
    except Exception:
        pass


@pytest.fixture(scope="session")
def chdb_image(docker_client) -> str:
    """The digest-tagged chdb image (a real ClickHouse engine); the build script is a no-op when the recipe's image
    exists, and builds it (and the Debian base) otherwise: minutes from scratch, see docs/images.md."""
    completed = subprocess.run(
        [str(REPO / "scripts" / "build-chdb-image.sh")], capture_output=True, text=True, timeout=1800
    )
    assert completed.returncode == 0, f"build-chdb-image.sh failed:\n{completed.stderr[-4000:]}"
    return completed.stdout.strip().splitlines()[-1]


@pytest.fixture
def unique() -> Callable[[str], str]:
    token = uuid.uuid4().hex[:8]
    return lambda stem: f"coordtest-{token}-{stem}"


@pytest.fixture
def make_volume(docker_client, unique) -> Iterator[Callable[[str], str]]:
    created: list[str] = []

    def make(stem: str) -> str:
        name = unique(stem)
        docker_client.volumes.create(name, labels={TEST_LABEL: SESSION})
        created.append(name)
        return name

    yield make
    for name in created:
        try:
            for container in docker_client.containers.list(all=True, filters={"volume": name}):
                _force_remove(container)
            docker_client.volumes.get(name).remove(force=True)
        except Exception:
            pass


@pytest.fixture
def make_container(docker_client, unique) -> Iterator[Callable[..., object]]:
    created: list[object] = []

    def make(
        stem: str, command: list[str] | str, volumes: dict[str, str] | None = None, image: str = TEST_IMAGE, **options
    ) -> object:
        container = docker_client.containers.run(
            image,
            command,
            name=unique(stem),
            detach=True,
            labels={TEST_LABEL: SESSION, **options.pop("labels", {})},
            volumes={name: {"bind": target, "mode": "rw"} for name, target in (volumes or {}).items()},
            **options,
        )
        created.append(container)
        return container

    yield make
    for container in created:
        _force_remove(container)


def volume_path(docker_client, name: str) -> Path:
    return Path(docker_client.volumes.get(name).attrs["Mountpoint"])


def wait_for(condition: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def container_state(docker_client, container) -> str:
    container.reload()
    state = container.attrs["State"]
    return "paused" if state.get("Paused") else state["Status"]


CHURN = ["sh", "/workloads/clickhouse_churn.sh"]


def start_churning_writer(docker_client, make_volume, make_container, stem: str, merged_parts: int):
    """A fresh volume with the ClickHouse-like writer on it, once it has merged `merged_parts` parts.
    Returns (volume name, container, host path of the volume)."""
    volume = make_volume(stem)
    container = make_container("writer", CHURN, {volume: "/data"})
    mount = volume_path(docker_client, volume)
    wait_for(lambda: len(list(mount.glob("store/*/*/202601_*_1"))) >= merged_parts, what="the writer's first merges")
    return volume, container, mount


def archive_listing(archive: Path, decompressor: str = "zstd") -> list[str]:
    """The member names GNU tar lists in a compressed archive (decompressor: zstd or gzip)."""
    completed = subprocess.run(
        f"{decompressor} -dc '{archive}' | tar -tf -",
        shell=True,
        capture_output=True,
        check=True,
        env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"},
    )
    return completed.stdout.decode().splitlines()


@pytest.fixture
def sigterm_guard() -> Iterator[None]:
    """SIGTERM before and after the run raises an AssertionError instead of killing pytest: only coord's own
    handler, installed for the run, turns it into Interrupted."""

    def not_coords(signum: int, frame: FrameType | None) -> None:
        raise AssertionError("SIGTERM arrived while coord's handler was not installed")

    previous = signal.signal(signal.SIGTERM, not_coords)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="module")
def rclone_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], ServedRemote]]:
    """`get(kind)`: a running rclone server of that kind (s3, sftp, webdav), one per kind for the whole test
    module (tests/rclone_servers.py); one a test stopped or made read-only is started again, writable."""
    started: dict[str, ServedRemote] = {}
    with contextlib.ExitStack() as stack:

        def get(kind: str) -> ServedRemote:
            if kind not in started:
                root = tmp_path_factory.mktemp(f"rclone-{kind}") / "served"
                started[kind] = stack.enter_context(serve_remote(kind, root))
            remote = started[kind]
            if remote.process is None or remote.process.poll() is not None or remote.read_only:
                remote.start()
            return remote

        yield get
