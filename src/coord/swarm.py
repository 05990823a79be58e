"""Docker Swarm: stopping a replicated service, and the cluster-wide claim on a service (docs/swarm.md).

- A replicated service cannot be stopped by stopping its container: Swarm starts a new task at once. `stop`
  scales it to 0 (after journaling the replica count it had) and back to that count afterwards; `coord recover`
  scales it back when coord died in between. A global service has no replica count to scale: `stop` is refused,
  with the advice to use pause or snapshot, which act on this node's task containers like on any container.
- No two nodes act on one service at once: before touching a service's tasks, coord writes a `coord.claim` label
  on the service with an update that carries the version it read, so of two concurrent claimers exactly one is
  accepted by Swarm (the other's update is "out of sequence"). The claim names the node, the run and a deadline
  after which any node may take it over (its holder died); it is journaled before it is written, removed after
  the run, and removed by `coord recover` if it is still this run's claim.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from dataclasses import asdict, dataclass

from coord.docker_ops import ContainerInfo, Engine, ServiceChanged, ServiceInfo
from coord.errors import CoordError
from coord.journal import CLAIM, CLAIMED, Journal, JournalEntry

log = logging.getLogger("coord.swarm")
steps = logging.getLogger("coord.steps")

CLAIM_LABEL = "coord.claim"
# How long a claim holds when its holder never releases it (a node that died): long enough for any backup or
# restore window, short enough that a dead node does not block the fleet for more than a night.
CLAIM_TTL_S = 6 * 3600
# How long, beyond the service's own stop grace period, to wait for this node's tasks to be down after scaling to 0.
TASKS_DOWN_MARGIN_S = 30.0
RETRIES_ON_CHANGE = 5  # re-read and update again when someone else updated the service in between (put back, release)


class ClaimTaken(CoordError):
    """Another node (or run) holds the service's claim: this run must not touch its tasks."""


@dataclass(frozen=True)
class Claim:
    """Who acts on a service: the node, the run (unique per run), its pid, and until when (epoch seconds)."""

    node: str
    run: str
    pid: int
    deadline: float

    def to_label(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_label(cls, text: str | None) -> Claim | None:
        """The claim a label holds, or None when there is none or it is unreadable (not a claim coord wrote)."""
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(str(data["node"]), str(data["run"]), int(data["pid"]), float(data["deadline"]))
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.deadline))
        return f"node {self.node} (run {self.run}, pid {self.pid}) until {until}"


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def services_of(containers: list[ContainerInfo]) -> dict[str, list[ContainerInfo]]:
    """The Swarm services the containers are tasks of (id -> its task containers here), in container order."""
    found: dict[str, list[ContainerInfo]] = {}
    for container in containers:
        if container.swarm_service is not None:
            found.setdefault(container.swarm_service, []).append(container)
    return found


def read_service(docker: Engine, service_id: str) -> ServiceInfo:
    service = docker.service(service_id)
    if service is None:
        raise CoordError(f"Swarm service {service_id[:12]} no longer exists (docker service ls)")
    return service


def global_refusal(service: ServiceInfo) -> str:
    return (
        f"service {service.name} is global (one task per node): Swarm restarts a stopped task and it has no replica "
        "count to scale to 0, so strategy stop cannot hold it down; use strategy pause or snapshot for its volumes"
    )


# The claim -----------------------------------------------------------------------------------------------------


def take_claim(docker: Engine, journal: Journal, service_id: str, node: str, run: str) -> tuple[Claim, JournalEntry]:
    """Claim the service for this run: journaled first, then the label written with the version read.

    Returns the claim and its journal entry (release with `release_claim`, then clear the entry). Raises
    ClaimTaken when a live claim of another run is on the service or another claimer's update got in first;
    CoordError (JournalError, DockerError) when the claim cannot be recorded or written (nothing is held then).
    """
    service = read_service(docker, service_id)
    held = Claim.from_label(service.labels.get(CLAIM_LABEL))
    if held is not None and held.run != run and held.deadline > time.time():
        raise ClaimTaken(
            f"service {service.name} is claimed by {held.describe()}: another coord is acting on it; "
            "try again later (after the deadline any node may take the claim over)"
        )
    if held is not None and held.run != run:
        log.warning("service %s: taking over the expired claim of %s", service.name, held.describe())
    claim = Claim(node=node, run=run, pid=os.getpid(), deadline=time.time() + CLAIM_TTL_S)
    entry = journal.record(CLAIM, service.id, CLAIMED, service.name, identity=claim.to_label())
    try:
        docker.update_service(service, labels={**service.labels, CLAIM_LABEL: claim.to_label()})
    except ServiceChanged:
        journal.clear(entry)
        winner = Claim.from_label((docker.service(service.id) or service).labels.get(CLAIM_LABEL))
        who = winner.describe() if winner else "someone else"
        raise ClaimTaken(
            f"service {service.name} was claimed at the same moment by {who}: another coord is acting on it; "
            "try again later"
        ) from None
    except CoordError:
        # The engine may have applied the update before failing: remove the label if it is ours, then forget it.
        if release_claim(docker, service.id, claim) is None:
            journal.clear(entry)
        raise
    steps.info("claimed service %s for node %s", service.name, node)
    return claim, entry


def release_claim(docker: Engine, service_id: str, claim: Claim) -> str | None:
    """Remove the claim label if it is still `claim` (another run's claim is never touched).

    Returns None when the service no longer carries this claim, or an operator message when it could not be
    removed (the deadline frees it anyway). Raises nothing.
    """
    for _ in range(RETRIES_ON_CHANGE):
        try:
            service = docker.service(service_id)
            if service is None or Claim.from_label(service.labels.get(CLAIM_LABEL)) != claim:
                return None
            labels = {key: value for key, value in service.labels.items() if key != CLAIM_LABEL}
            docker.update_service(service, labels=labels)
            return None
        except ServiceChanged:
            continue  # someone updated the service meanwhile: read it again
        except CoordError as error:
            return f"could not release the claim on service {service_id[:12]}: {error.message}; run: coord recover"
    return f"could not release the claim on service {service_id[:12]}: it kept changing; run: coord recover"


# Scaling to 0 and back -----------------------------------------------------------------------------------------


def scale_to_zero(docker: Engine, service: ServiceInfo, tasks: list[ContainerInfo], wait_s: float) -> None:
    """Scale a replicated service to 0 with the version read, then wait (up to `wait_s`) until this node's task
    containers are no longer running. The caller journals the replica count and registers `scale_back` first.

    Raises CoordError for a global service, when the update fails, or when the tasks are still up after `wait_s`.
    """
    if service.replicas is None:
        raise CoordError(global_refusal(service))
    steps.info("scaling service %s to 0 (from %d replicas)", service.name, service.replicas)
    docker.update_service(service, replicas=0)
    deadline = time.monotonic() + wait_s
    for task in tasks:
        while docker.container_state(task.id) in ("running", "paused", "restarting"):
            if time.monotonic() > deadline:
                raise CoordError(
                    f"service {service.name} was scaled to 0 but its task {task.name} is still up after "
                    f"{wait_s:.0f}s; coord scales it back and does not archive"
                )
            time.sleep(0.2)


def scale_back(docker: Engine, service_id: str, name: str, replicas: int) -> str | None:
    """Scale the service back to `replicas` if it is still at 0, as coord left it (a service someone scaled in
    between is left alone). Returns None when done or nothing was coord's to do, else an operator message."""
    for _ in range(RETRIES_ON_CHANGE):
        try:
            service = docker.service(service_id)
            if service is None:
                return None
            if service.replicas != 0:
                log.info("service %s is at %s replicas, not 0: left alone", name, service.replicas)
                return None
            docker.update_service(service, replicas=replicas)
            steps.info("service %s scaled back to %d", name, replicas)
            return None
        except ServiceChanged:
            continue
        except CoordError as error:
            return (
                f"could not scale service {name} back to {replicas} ({error.message}); run: "
                f"docker service scale {name}={replicas}   (or: coord recover)"
            )
    return f"service {name} kept changing; run: docker service scale {name}={replicas}   (or: coord recover)"
