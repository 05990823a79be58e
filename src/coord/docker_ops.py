"""The few Docker operations coord needs, with retries for transient failures. Nothing else imports the SDK.

Retry policy (tenacity): 5xx answers, connection errors and timeouts are transient and retried with exponential
backoff; 4xx answers are not (409 "is paused" will not change by asking again), nor is the engine's 500 for
unpausing a container that is not paused (docs/platform.md). Putting containers back (unpause/start) retries
harder than quiescing them: giving up there leaves a stack down.

Downtime is bounded: the calls that change or read a container's state (pause, unpause, stop, start, inspect)
each get their own HTTP timeout of seconds (stop: its stop timeout plus a margin), not the client's 60 s, and
their retries stop after a deadline as well as after a number of attempts. A hung engine therefore costs at most
about the deadline plus one call (`*_DEADLINE_S + *_TIMEOUT_S`) before coord reports the container and moves on;
a timed-out call is retried, and a retry that finds the work done (pause: "already paused", unpause: "is not
paused") counts as success.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import docker
import docker.errors
import requests
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)
from tenacity.stop import stop_base

from coord.errors import DockerError

log = logging.getLogger("coord.docker")
T = TypeVar("T")

QUIESCE_ATTEMPTS = 4
RESTORE_ATTEMPTS = 8
API_TIMEOUT_S = 60  # every other call (listing, volumes, exec): they do not hold a container down

# Per-call HTTP timeouts of the calls made while containers are (or are about to be) down. Pausing and unpausing
# is a cgroup freezer write (milliseconds): 10 s means the engine hangs. Starting sets up mounts and networking.
PAUSE_TIMEOUT_S = 10.0
UNPAUSE_TIMEOUT_S = 10.0
START_TIMEOUT_S = 30.0
INSPECT_TIMEOUT_S = 10.0
STOP_MARGIN_S = 15.0  # stop waits the container's stop timeout, then kills it: the margin covers the kill
# How long retries of one operation may go on (the last attempt may add one call's timeout).
QUIESCE_DEADLINE_S = 30.0
RESTORE_DEADLINE_S = 60.0


def is_transient(error: BaseException) -> bool:
    """True for Docker failures worth retrying. APIError is also a RequestException, so it is tested first."""
    if isinstance(error, docker.errors.NotFound):
        return False
    if isinstance(error, docker.errors.APIError):
        status = error.status_code or 0
        explanation = str(error.explanation or "")
        if "is not paused" in explanation:
            return False
        if SERVICE_CHANGED in explanation:  # Swarm's optimistic concurrency: the version read is stale
            return False
        if NOT_A_MANAGER in explanation:  # a worker's 503 for a service call: asking again will not promote it
            return False
        return status >= 500
    return isinstance(error, requests.ConnectionError | requests.Timeout | ConnectionError | TimeoutError)


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.warning(
        "Docker call %s failed (attempt %d): %s; retrying",
        getattr(state.fn, "__name__", "?"),
        state.attempt_number,
        error,
    )


def with_retries(
    call: Callable[[], T],
    attempts: int = QUIESCE_ATTEMPTS,
    *,
    max_wait_s: float = 8.0,
    deadline_s: float | None = None,
) -> T:
    """Run `call`, retrying transient Docker failures with exponential backoff, at most `attempts` times and,
    with `deadline_s`, no new attempt once that many seconds have passed since the first."""
    stop: stop_base = stop_after_attempt(attempts)
    if deadline_s is not None:
        stop = stop | stop_after_delay(deadline_s)
    retrying = Retrying(
        retry=retry_if_exception(is_transient),
        stop=stop,
        wait=wait_exponential(multiplier=0.25, max=max_wait_s),
        before_sleep=_log_retry,
        reraise=True,
    )
    return retrying(call)


# What the engine answers (500) to a service update carrying a version that is no longer the service's: someone
# else updated it since it was read (docs/swarm.md). Exactly one of two concurrent updaters gets through.
SERVICE_CHANGED = "update out of sequence"
# What a worker's engine answers (503) to a service inspection or update: those calls are manager-only.
NOT_A_MANAGER = "not a swarm manager"

# Labels Swarm puts on a task's container (docs/swarm.md).
SWARM_SERVICE_ID = "com.docker.swarm.service.id"
SWARM_SERVICE_NAME = "com.docker.swarm.service.name"
SWARM_TASK_NAME = "com.docker.swarm.task.name"
SWARM_NODE_ID = "com.docker.swarm.node.id"


class ServiceChanged(DockerError):
    """A service update was refused because the service changed since its version was read."""


@dataclass(frozen=True)
class ServiceInfo:
    """A Swarm service as coord needs it: its mode, replica count (None for a global one), the version an update
    must carry, and its labels (Spec.Labels, not its containers')."""

    id: str
    name: str
    replicas: int | None  # None: a global service (one task per node)
    version: int
    labels: dict[str, str]

    @property
    def is_global(self) -> bool:
        return self.replicas is None


def engine_address() -> str:
    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    state: str  # running | paused | exited | created | restarting | dead
    labels: dict[str, str]

    @property
    def compose_service(self) -> str | None:
        return self.labels.get("com.docker.compose.service")

    @property
    def compose_project(self) -> str | None:
        return self.labels.get("com.docker.compose.project")

    @property
    def swarm_service(self) -> str | None:
        """The id of the Swarm service this container is a task of, or None for a plain container."""
        return self.labels.get(SWARM_SERVICE_ID)

    @property
    def swarm_service_name(self) -> str | None:
        """The name of the Swarm service this container is a task of, or None for a plain container."""
        return self.labels.get(SWARM_SERVICE_NAME)

    @property
    def swarm_place(self) -> str:
        """'node N, service S, task T' for a Swarm task's container (plan output), '' for a plain container."""
        if self.swarm_service is None:
            return ""
        return (
            f"node {self.labels.get(SWARM_NODE_ID, '?')[:12]}, service {self.labels.get(SWARM_SERVICE_NAME, '?')}, "
            f"task {self.labels.get(SWARM_TASK_NAME, '?')}"
        )


def swarm_place(container: ContainerInfo) -> dict[str, str]:
    """Plan JSON: the node (id), service and task of a Swarm task's container; {} for a plain container."""
    if container.swarm_service is None:
        return {}
    labels = container.labels
    return {
        "node": labels.get(SWARM_NODE_ID, ""),
        "service": labels.get(SWARM_SERVICE_NAME, ""),
        "task": labels.get(SWARM_TASK_NAME, ""),
    }


def _state_of(attributes: dict[str, Any]) -> str:
    state = attributes.get("State") or {}
    if isinstance(state, dict):
        # A paused container also reports Running == True (docs/platform.md): Paused decides.
        if state.get("Paused"):
            return "paused"
        return str(state.get("Status") or "unknown")
    return str(state)


class Engine(Protocol):
    """The engine operations coord performs, and nothing else: what the runner, planning, strategies, hooks,
    recovery and restore call. DockerControl is the real one; tests/fakes.py holds an in-memory one.

    Failures raise DockerError with an operator message (what was attempted, and the engine's answer).
    """

    def volume_names(self) -> list[str]:
        """The names of all volumes, sorted."""
        ...

    def volume_mountpoint(self, name: str) -> str:
        """Where the volume's files are on the host."""
        ...

    def create_volume(self, name: str, labels: dict[str, str] | None = None) -> str:
        """Create a volume (local driver) with `labels`; returns its mountpoint on the host."""
        ...

    def volumes_labelled(self, label: str) -> dict[str, dict[str, str]]:
        """The volumes carrying the label key `label`: name -> all their labels."""
        ...

    def remove_volume(self, name: str) -> None:
        """Remove a volume (it must not be in use)."""
        ...

    def containers_using(self, volume: str) -> list[ContainerInfo]:
        """Containers (any state) that mount the named volume, sorted by name."""
        ...

    def find_containers(self, reference: str) -> list[ContainerInfo]:
        """Containers whose name is `reference`, or whose compose service is `reference` ('project/service' too)."""
        ...

    def container_state(self, identifier: str) -> str | None:
        """The container's state now, or None when it no longer exists."""
        ...

    def pause(self, identifier: str) -> None:
        """Pause a running container (a paused one is left paused)."""
        ...

    def unpause(self, identifier: str) -> None:
        """Unpause a paused container (one that is not paused is left as it is)."""
        ...

    def stop(self, identifier: str, timeout_s: int) -> None:
        """Stop a container (paused too), killing it after `timeout_s` seconds."""
        ...

    def start(self, identifier: str) -> None:
        """Start a stopped container."""
        ...

    def exec(self, identifier: str, argv: list[str], timeout_s: float) -> tuple[int | None, str]:
        """Run `argv` in the container: (exit code, combined output); exit code None when it timed out."""
        ...

    def service(self, identifier: str) -> ServiceInfo | None:
        """The Swarm service (by id or name), or None when it no longer exists."""
        ...

    def update_service(
        self, service: ServiceInfo, replicas: int | None = None, labels: dict[str, str] | None = None
    ) -> None:
        """Update a service's replica count and/or labels, carrying the version `service` was read at: raises
        ServiceChanged when the service changed since (nothing is updated then)."""
        ...

    def swarm_node(self) -> str | None:
        """This engine's Swarm node as 'hostname (node id)', or None when it is not part of a swarm."""
        ...

    def swarm_hostname(self) -> str | None:
        """This engine's hostname (`docker info` Name) when it is an active Swarm node, else None."""
        ...


class DockerControl:
    """A connection to the engine and the operations coord performs through it."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client

    @classmethod
    def connect(cls) -> DockerControl:
        """Connect using DOCKER_HOST (or the default socket) and check the engine answers."""
        try:
            client = with_retries(lambda: docker.from_env(timeout=API_TIMEOUT_S))
            with_retries(client.ping)
        except docker.errors.DockerException as error:
            raise DockerError(
                f"cannot reach the Docker engine at {engine_address()}: {error}. Is dockerd running, and may this "
                "user use its socket? (scripts/ensure-docker.sh starts one on a Debian host)"
            ) from None
        except requests.RequestException as error:
            raise DockerError(f"cannot reach the Docker engine at {engine_address()}: {error}") from None
        return cls(client)

    def _call(
        self, what: str, call: Callable[[], T], attempts: int = QUIESCE_ATTEMPTS, deadline_s: float | None = None
    ) -> T:
        try:
            return with_retries(call, attempts, deadline_s=deadline_s)
        except docker.errors.NotFound as error:
            raise DockerError(f"{what}: not found ({error.explanation})") from None
        except docker.errors.APIError as error:
            raise DockerError(f"{what}: the engine answered {error.status_code}: {error.explanation}") from None
        except requests.Timeout:
            raise DockerError(f"{what}: the engine did not answer in time (hung?)") from None
        except (docker.errors.DockerException, requests.RequestException) as error:
            raise DockerError(f"{what}: {error}") from None

    def _request(
        self, method: str, path: str, identifier: str, timeout_s: float, params: dict[str, int] | None = None
    ) -> requests.Response:
        """One engine request about a container with its own timeout (the SDK's calls use the client's 60 s).
        Raises the SDK's APIError/NotFound for an error answer, requests' Timeout when the engine is silent."""
        api = self.client.api
        url = f"{api.base_url}/v{api.api_version}{path.format(quote(identifier, safe=''))}"
        response = api.request(method, url, params=params, timeout=timeout_s)
        try:
            response.raise_for_status()
        except requests.HTTPError as error:
            docker.errors.create_api_error_from_http_exception(error)  # raises APIError or NotFound
        return response

    # Volumes ---------------------------------------------------------------------------------------------------

    def volume_names(self) -> list[str]:
        volumes = self._call("list volumes", lambda: self.client.volumes.list())
        return sorted(volume.name for volume in volumes)

    def volume_mountpoint(self, name: str) -> str:
        volume = self._call(f"inspect volume {name}", lambda: self.client.volumes.get(name))
        return str(volume.attrs["Mountpoint"])

    def create_volume(self, name: str, labels: dict[str, str] | None = None) -> str:
        """Create a volume (local driver) named `name` with `labels`; returns its mountpoint on the host."""
        volume = self._call(f"create volume {name}", lambda: self.client.volumes.create(name, labels=labels or {}))
        return str(volume.attrs["Mountpoint"])

    def volumes_labelled(self, label: str) -> dict[str, dict[str, str]]:
        volumes = self._call(
            f"list volumes labelled {label}", lambda: self.client.volumes.list(filters={"label": label})
        )
        return {volume.name: dict(volume.attrs.get("Labels") or {}) for volume in volumes}

    def remove_volume(self, name: str) -> None:
        self._call(f"remove volume {name}", lambda: self.client.volumes.get(name).remove())

    # Containers ------------------------------------------------------------------------------------------------

    def containers_using(self, volume: str) -> list[ContainerInfo]:
        """Containers (any state) that mount the named volume, confirmed by Mounts[].Name.

        The engine's `volume` filter also matches a mount's destination path, so its answer is only a shortlist.
        """
        candidates = self._call(
            f"list containers using {volume}",
            lambda: self.client.api.containers(all=True, filters={"volume": volume}),
        )
        users = []
        for summary in candidates:
            mounts = summary.get("Mounts") or []
            if any(m.get("Type") == "volume" and m.get("Name") == volume for m in mounts):
                users.append(self.container(summary["Id"]))
        return sorted(users, key=lambda c: c.name)

    def find_containers(self, reference: str) -> list[ContainerInfo]:
        """Containers whose name is `reference`, or whose compose service is `reference` ('project/service' too)."""
        project, _, service = reference.rpartition("/")
        label_filter = [f"com.docker.compose.service={service}"]
        if project:
            label_filter.append(f"com.docker.compose.project={project}")
        by_label = self._call(
            f"find containers of service {reference}",
            lambda: self.client.api.containers(all=True, filters={"label": label_filter}),
        )
        found = {summary["Id"] for summary in by_label}
        if not project:
            by_name = self._call(
                f"find container {reference}",
                lambda: self.client.api.containers(all=True, filters={"name": f"^/{reference}$"}),
            )
            found |= {summary["Id"] for summary in by_name}
        return sorted((self.container(identifier) for identifier in found), key=lambda c: c.name)

    def container(self, identifier: str) -> ContainerInfo:
        attributes = self._call(
            f"inspect container {identifier}",
            lambda: self._request("GET", "/containers/{}/json", identifier, INSPECT_TIMEOUT_S).json(),
        )
        return ContainerInfo(
            id=attributes["Id"],
            name=str(attributes.get("Name", "")).lstrip("/"),
            state=_state_of(attributes),
            labels=dict((attributes.get("Config") or {}).get("Labels") or {}),
        )

    def container_state(self, identifier: str) -> str | None:
        """The container's state now, or None when it no longer exists."""
        try:
            return self.container(identifier).state
        except DockerError as error:
            if "not found" in error.message:
                return None
            raise

    def pause(self, identifier: str) -> None:
        try:
            self._call(
                f"pause {identifier}",
                lambda: self._request("POST", "/containers/{}/pause", identifier, PAUSE_TIMEOUT_S),
                deadline_s=QUIESCE_DEADLINE_S,
            )
        except DockerError as error:
            if "is already paused" not in error.message:  # a timed-out attempt that the engine carried out
                raise

    def unpause(self, identifier: str) -> None:
        try:
            self._call(
                f"unpause {identifier}",
                lambda: self._request("POST", "/containers/{}/unpause", identifier, UNPAUSE_TIMEOUT_S),
                RESTORE_ATTEMPTS,
                RESTORE_DEADLINE_S,
            )
        except DockerError as error:
            if "is not paused" not in error.message:  # a timed-out attempt that the engine carried out
                raise

    def stop(self, identifier: str, timeout_s: int) -> None:
        self._call(
            f"stop {identifier}",
            lambda: self._request(
                "POST", "/containers/{}/stop", identifier, timeout_s + STOP_MARGIN_S, params={"t": timeout_s}
            ),
            deadline_s=QUIESCE_DEADLINE_S + timeout_s,
        )

    def start(self, identifier: str) -> None:
        self._call(
            f"start {identifier}",
            lambda: self._request("POST", "/containers/{}/start", identifier, START_TIMEOUT_S),
            RESTORE_ATTEMPTS,
            RESTORE_DEADLINE_S,
        )

    # Swarm services ---------------------------------------------------------------------------------------------

    def service(self, identifier: str) -> ServiceInfo | None:
        try:
            attributes = self._call(
                f"inspect service {identifier}",
                lambda: self._request("GET", "/services/{}", identifier, INSPECT_TIMEOUT_S).json(),
            )
        except DockerError as error:
            if "not found" in error.message:
                return None
            raise
        spec = attributes.get("Spec") or {}
        replicated = (spec.get("Mode") or {}).get("Replicated")
        return ServiceInfo(
            id=str(attributes["ID"]),
            name=str(spec.get("Name", "")),
            replicas=int(replicated.get("Replicas", 1)) if replicated is not None else None,
            version=int((attributes.get("Version") or {}).get("Index", 0)),
            labels=dict(spec.get("Labels") or {}),
        )

    def update_service(
        self, service: ServiceInfo, replicas: int | None = None, labels: dict[str, str] | None = None
    ) -> None:
        """The whole spec is read and sent back with only the replica count and/or labels changed; the engine
        applies it only if the service is still at `service.version` (else ServiceChanged)."""

        def update() -> None:
            attributes = self._request("GET", "/services/{}", service.id, INSPECT_TIMEOUT_S).json()
            spec = dict(attributes["Spec"])
            if replicas is not None:
                spec["Mode"] = {"Replicated": {"Replicas": replicas}}
            if labels is not None:
                spec["Labels"] = labels
            api = self.client.api
            url = f"{api.base_url}/v{api.api_version}/services/{quote(service.id, safe='')}/update"
            response = api.request("POST", url, params={"version": service.version}, json=spec, timeout=API_TIMEOUT_S)
            try:
                response.raise_for_status()
            except requests.HTTPError as error:
                docker.errors.create_api_error_from_http_exception(error)

        try:
            self._call(f"update service {service.name}", update, RESTORE_ATTEMPTS, RESTORE_DEADLINE_S)
        except DockerError as error:
            if SERVICE_CHANGED in error.message:
                raise ServiceChanged(
                    f"service {service.name} changed since coord read it (version {service.version}): "
                    "another node or operator updated it at the same time"
                ) from None
            raise

    def _swarm_info(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """`docker info` and its Swarm part when this engine is an active Swarm node (state active, a node id),
        else None."""
        info = self._call("read the engine's info", lambda: self.client.info())
        swarm = info.get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active" or not swarm.get("NodeID"):
            return None
        return info, swarm

    def swarm_node(self) -> str | None:
        found = self._swarm_info()
        if found is None:
            return None
        info, swarm = found
        return f"{info.get('Name', '?')} ({str(swarm['NodeID'])[:12]})"

    def swarm_hostname(self) -> str | None:
        found = self._swarm_info()
        return None if found is None else str(found[0].get("Name") or "") or None

    def swarm_role(self) -> str | None:
        """'manager' or 'worker' (docker info: Swarm.ControlAvailable), or None when not part of a swarm."""
        found = self._swarm_info()
        if found is None:
            return None
        return "manager" if found[1].get("ControlAvailable") else "worker"

    # Exec ------------------------------------------------------------------------------------------------------

    def exec(self, identifier: str, argv: list[str], timeout_s: float) -> tuple[int | None, str]:
        """Run `argv` in the container; returns (exit code, combined output). Exit code None: timed out.

        The SDK has no exec timeout; the command runs in a worker thread and, on timeout, its process is killed
        through the host pid the engine reports (possible when coord runs on the host as root).
        """
        created = self._call(
            f"exec in {identifier}", lambda: self.client.api.exec_create(identifier, argv, stdout=True, stderr=True)
        )
        exec_id = created["Id"]
        output: dict[str, bytes] = {}
        failure: list[BaseException] = []

        def run() -> None:
            try:
                output["data"] = self.client.api.exec_start(exec_id, stream=False, demux=False) or b""
            except BaseException as error:  # reported below, in the caller's thread
                failure.append(error)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(timeout_s)
        if worker.is_alive():
            self._kill_exec(exec_id)
            return None, ""
        if failure:
            error = failure[0]
            if isinstance(error, docker.errors.APIError):
                raise DockerError(f"exec in {identifier}: the engine answered {error.status_code}: {error.explanation}")
            raise DockerError(f"exec in {identifier}: {error}")
        inspected = self._call("inspect exec", lambda: self.client.api.exec_inspect(exec_id))
        text = output.get("data", b"").decode("utf-8", "replace")
        return inspected.get("ExitCode"), text

    def _kill_exec(self, exec_id: str) -> None:
        try:
            pid = self.client.api.exec_inspect(exec_id).get("Pid")
            if pid:
                os.kill(int(pid), signal.SIGKILL)
        except (docker.errors.DockerException, requests.RequestException, OSError) as error:
            log.warning("could not kill timed-out exec %s: %s", exec_id[:12], error)
