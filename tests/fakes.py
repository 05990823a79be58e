"""An in-memory Docker engine (coord.docker_ops.Engine) for tests of coord's orchestration without Docker.

It holds volumes (real directories under a temporary root, so GNU tar reads real files) and containers with
the engine's state machine as DockerControl presents it (Docker Engine 20.10's answers, as checked there):

    pause:   running -> paused; paused stays paused (DockerControl treats "already paused" as done);
             exited/created -> error 409 "is not running"
    unpause: paused -> running; anything else is left as it is (DockerControl treats "is not paused" as done)
    stop:    running or paused -> exited; exited/created: no error, nothing changes
    start:   exited/created -> running; running: no error; paused -> error 409
    exec:    only in a running container (409 when paused or not running)

Every call is recorded (`calls`), and a test can make a chosen call fail (`fail_at`: by method and container,
or the Nth call) or run something right after it (`after`: e.g. send SIGTERM while a container is paused).
Failures are DockerError with the same shape of message as DockerControl's ("pause <id>: the engine answered
500: ..."), since that is what coord reports to the operator.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from coord.docker_ops import ContainerInfo, ServiceChanged, ServiceInfo
from coord.errors import DockerError

ExecBehaviour = Callable[[list[str]], tuple[int | None, str]]


@dataclass
class FakeContainer:
    id: str
    name: str
    state: str
    volumes: tuple[str, ...]
    labels: dict[str, str]

    def info(self) -> ContainerInfo:
        return ContainerInfo(id=self.id, name=self.name, state=self.state, labels=dict(self.labels))


@dataclass(frozen=True)
class Call:
    """One call made to the engine: the method and what it was about (a container's name, a volume's name)."""

    method: str
    target: str | None


@dataclass
class _Failure:
    method: str | None
    container: str | None
    nth: int
    message: str
    status: int
    matched: int = 0


@dataclass
class _After:
    method: str
    container: str | None
    action: Callable[[], None]


@dataclass
class FakeEngine:
    """The engine. `volumes_root`: where volumes' directories are created (their "Mountpoint")."""

    volumes_root: Path
    calls: list[Call] = field(default_factory=list)
    volumes: dict[str, Path] = field(default_factory=dict)
    volume_labels: dict[str, dict[str, str]] = field(default_factory=dict)  # by volume name
    containers: dict[str, FakeContainer] = field(default_factory=dict)  # by id
    exec_behaviour: dict[str, ExecBehaviour] = field(default_factory=dict)  # by container name
    services: dict[str, ServiceInfo] = field(default_factory=dict)  # by id
    swarm: str | None = None  # this engine's Swarm role: 'manager', 'worker', or None (no swarm)
    _failures: list[_Failure] = field(default_factory=list)
    _afters: list[_After] = field(default_factory=list)

    # Setting the scene ------------------------------------------------------------------------------------------

    def add_volume(self, name: str, files: dict[str, str] | None = None) -> Path:
        """Create the volume's directory, <volumes root>/<name>, with `files` (relative path -> text); returns it.
        The same directory serves host mode (it is the volume's Mountpoint) and sidecar mode (--volumes-root)."""
        path = self.volumes_root / name
        path.mkdir(parents=True)
        for relative, text in (files or {}).items():
            (path / relative).parent.mkdir(parents=True, exist_ok=True)
            (path / relative).write_text(text)
        self.volumes[name] = path
        return path

    def add_container(
        self,
        name: str,
        volumes: tuple[str, ...] = (),
        state: str = "running",
        service: str | None = None,
        project: str | None = None,
    ) -> FakeContainer:
        labels = {}
        if service is not None:
            labels["com.docker.compose.service"] = service
        if project is not None:
            labels["com.docker.compose.project"] = project
        container = FakeContainer(hashlib.sha256(name.encode()).hexdigest(), name, state, volumes, labels)
        self.containers[container.id] = container
        return container

    def remove_container(self, name: str) -> None:
        del self.containers[self.named(name).id]

    def named(self, name: str) -> FakeContainer:
        return next(c for c in self.containers.values() if c.name == name)

    def state_of(self, name: str) -> str:
        return self.named(name).state

    def fail_at(
        self,
        method: str | None = None,
        container: str | None = None,
        nth: int = 1,
        message: str = "injected failure",
        status: int = 500,
    ) -> None:
        """Make the `nth` call matching `method` and `container` (a name; None matches any) fail, once.
        With neither given, the `nth` call to the engine fails, whatever it is. The call changes nothing."""
        self._failures.append(_Failure(method, container, nth, message, status))

    def after(self, method: str, container: str | None, action: Callable[[], None]) -> None:
        """Run `action` right after each successful call of `method` on `container` (None: any)."""
        self._afters.append(_After(method, container, action))

    def on_exec(self, container: str, behaviour: ExecBehaviour) -> None:
        """What `exec` in the named container does: given argv, returns (exit code or None, output)."""
        self.exec_behaviour[container] = behaviour

    def changes(self) -> list[tuple[str, str | None]]:
        """The calls that change a container or run in one, in order: (method, container name)."""
        return [
            (call.method, call.target)
            for call in self.calls
            if call.method in ("pause", "unpause", "stop", "start", "exec")
        ]

    def touched(self, name: str) -> list[str]:
        """The methods called about the named container, in order."""
        return [call.method for call in self.calls if call.target == name]

    # The Engine interface ---------------------------------------------------------------------------------------

    def volume_names(self) -> list[str]:
        self._enter("volume_names", None, "list volumes")
        return sorted(self.volumes)

    def volume_mountpoint(self, name: str) -> str:
        self._enter("volume_mountpoint", name, f"inspect volume {name}")
        if name not in self.volumes:
            raise DockerError(f"inspect volume {name}: not found (get {name}: no such volume)")
        return str(self.volumes[name])

    def create_volume(self, name: str, labels: dict[str, str] | None = None) -> str:
        self._enter("create_volume", name, f"create volume {name}")
        if name not in self.volumes:
            self.add_volume(name)
            self.volume_labels[name] = dict(labels or {})
        return str(self.volumes[name])

    def volumes_labelled(self, label: str) -> dict[str, dict[str, str]]:
        self._enter("volumes_labelled", None, f"list volumes labelled {label}")
        return {name: dict(labels) for name, labels in self.volume_labels.items() if label in labels}

    def remove_volume(self, name: str) -> None:
        self._enter("remove_volume", name, f"remove volume {name}")
        if any(name in container.volumes for container in self.containers.values()):
            raise DockerError(f"remove volume {name}: the engine answered 409: volume is in use")
        path = self.volumes.pop(name)
        self.volume_labels.pop(name, None)
        shutil.rmtree(path)

    def containers_using(self, volume: str) -> list[ContainerInfo]:
        self._enter("containers_using", volume, f"list containers using {volume}")
        using = [c.info() for c in self.containers.values() if volume in c.volumes]
        return sorted(using, key=lambda c: c.name)

    def find_containers(self, reference: str) -> list[ContainerInfo]:
        self._enter("find_containers", reference, f"find containers of service {reference}")
        project, _, service = reference.rpartition("/")

        def matches(container: FakeContainer) -> bool:
            labels = container.labels
            by_service = labels.get("com.docker.compose.service") == service and (
                not project or labels.get("com.docker.compose.project") == project
            )
            return by_service or (not project and container.name == reference)

        return sorted((c.info() for c in self.containers.values() if matches(c)), key=lambda c: c.name)

    def container_state(self, identifier: str) -> str | None:
        container = self.containers.get(identifier)
        self._enter("container_state", container.name if container else identifier, f"inspect container {identifier}")
        return container.state if container else None

    def pause(self, identifier: str) -> None:
        container = self._existing("pause", identifier)
        if container.state in ("exited", "created", "dead"):
            raise DockerError(f"pause {identifier}: the engine answered 409: Container {identifier} is not running")
        container.state = "paused"
        self._done("pause", container)

    def unpause(self, identifier: str) -> None:
        container = self._existing("unpause", identifier)
        if container.state == "paused":
            container.state = "running"
        self._done("unpause", container)

    def stop(self, identifier: str, timeout_s: int) -> None:
        container = self._existing("stop", identifier)
        if container.state in ("running", "paused", "restarting"):
            container.state = "exited"
        self._done("stop", container)

    def start(self, identifier: str) -> None:
        container = self._existing("start", identifier)
        if container.state == "paused":
            raise DockerError(
                f"start {identifier}: the engine answered 409: cannot start a paused container, try unpause instead"
            )
        container.state = "running"
        self._done("start", container)

    def exec(self, identifier: str, argv: list[str], timeout_s: float) -> tuple[int | None, str]:
        container = self._existing("exec", identifier, what="exec in")
        if container.state == "paused":
            raise DockerError(
                f"exec in {identifier}: the engine answered 409: Container {identifier} is paused, unpause the "
                "container before exec"
            )
        if container.state != "running":
            raise DockerError(f"exec in {identifier}: the engine answered 409: Container {identifier} is not running")
        behaviour = self.exec_behaviour.get(container.name, lambda argv: (0, ""))
        answer = behaviour(list(argv))
        self._done("exec", container)
        return answer

    # Swarm: services with Swarm's versioning (tests/e2e/test_swarm.py runs the real one) ---------------------------

    def add_service(self, name: str, replicas: int | None = 1, labels: dict[str, str] | None = None) -> ServiceInfo:
        """A service at version 1 (replicated with `replicas`, global when None); this engine becomes a manager."""
        service = ServiceInfo(hashlib.sha256(name.encode()).hexdigest()[:25], name, replicas, 1, dict(labels or {}))
        self.services[service.id] = service
        self.swarm = self.swarm or "manager"
        return service

    def service(self, identifier: str) -> ServiceInfo | None:
        self._enter("service", identifier, f"inspect service {identifier}")
        return next((s for s in self.services.values() if identifier in (s.id, s.name)), None)

    def update_service(
        self, service: ServiceInfo, replicas: int | None = None, labels: dict[str, str] | None = None
    ) -> None:
        """As Engine 20.10: refused when the version is stale; a global service cannot become replicated."""
        self._enter("update_service", service.name, f"update service {service.name}")
        current = self.services.get(service.id)
        if current is None:
            raise DockerError(f"update service {service.name}: not found (service {service.id} not found)")
        if service.version != current.version:
            raise ServiceChanged(f"service {service.name} changed since coord read it (version {service.version})")
        if replicas is not None and current.replicas is None:
            raise DockerError(f"update service {service.name}: the engine answered 400: mode change is not allowed")
        self.services[service.id] = replace(
            current,
            version=current.version + 1,
            replicas=current.replicas if replicas is None else replicas,
            labels=current.labels if labels is None else dict(labels),
        )

    def swarm_node(self) -> str | None:
        return "fake-node (fakenodeid00)" if self.swarm else None

    def swarm_role(self) -> str | None:
        return self.swarm

    def swarm_hostname(self) -> str | None:
        return None

    # The machinery ----------------------------------------------------------------------------------------------

    def _existing(self, method: str, identifier: str, what: str | None = None) -> FakeContainer:
        container = self.containers.get(identifier)
        self._enter(method, container.name if container else identifier, f"{what or method} {identifier}")
        if container is None:
            raise DockerError(f"{what or method} {identifier}: not found (No such container: {identifier})")
        return container

    def _enter(self, method: str, target: str | None, what: str) -> None:
        """Record the call; raise the injected failure if this is the chosen call (before anything changes)."""
        self.calls.append(Call(method, target))
        for failure in self._failures:
            if failure.method is not None and failure.method != method:
                continue
            if failure.container is not None and failure.container != target:
                continue
            failure.matched += 1
            if failure.matched == failure.nth:
                raise DockerError(f"{what}: the engine answered {failure.status}: {failure.message}")

    def _done(self, method: str, container: FakeContainer) -> None:
        for after in self._afters:
            if after.method == method and after.container in (None, container.name):
                after.action()
