"""Quiescing: what happens to the containers using a volume around its archiving step.

This is the one place to read to know what happens to a paused or stopped container when archiving fails:

- Entering `quiesced()` pauses (pause) or stops (stop) each container of the group that is running, in stop
  order. Before each change a journal entry is written and fsynced (journal.py); the restoration is
  registered the moment the change succeeds. Containers that were not running are left alone and never
  started: coord only undoes what it did.
- Leaving the block, however it is left (archive done, archive failed, an exception, Ctrl-C or SIGTERM turned
  into `Interrupted`), puts every changed container back in reverse order, with SIGTERM/SIGINT held until
  that is done. A container that cannot be put back does not stop the others from being restored; it is
  recorded on its action (restored=False, with the command to fix it) and its journal entry is kept so
  `coord recover` can try again. The runner turns that into a loud run failure.
- If coord itself dies (SIGKILL, OOM), the journal entries remain and the next `coord backup` or
  `coord recover` puts those containers back (recovery.py).
- One exception, `ContainersMustStayDown` (a restore's swap broke off halfway): starting a database on half of
  each tree is worse than leaving it stopped, so the containers stay down with their journal entries kept, and
  `coord recover` starts them once it has completed the swap.
- Swarm (swarm.py): the services whose tasks are in the group are claimed first (a `coord.claim` label, so no
  other node acts on them at once) and released last. Under `stop`, a replicated service is scaled to 0 and back
  instead of its containers being stopped (Swarm would start new tasks), journaled like a container; a global
  service is refused before anything changes. `pause` and `snapshot` pause the task containers on this node.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from coord import swarm
from coord.docker_ops import ContainerInfo, Engine, ServiceInfo
from coord.errors import ContainersMustStayDown, CoordError
from coord.journal import (
    CONTAINER,
    PAUSED,
    SCALED_TO_ZERO,
    SERVICE,
    STOPPED,
    STOPPED_PAUSED,
    Journal,
    JournalEntry,
)
from coord.plan import QUIESCING, QuiesceGroup
from coord.policy import Strategy
from coord.results import ContainerAction
from coord.signals import deferred

log = logging.getLogger("coord.strategies")  # the name operators see in logs, kept
# What happens to containers, as it happens: the CLI shows these on a terminal even without -v.
steps = logging.getLogger("coord.steps")


def put_back(docker: Engine, container_id: str, name: str, action: str) -> str | None:
    """Undo `action` (paused/stopped) on a container if it is still in the state coord put it in.

    Returns None when the container is as it was before coord touched it, or an operator message.
    Raises nothing for Docker failures (they are in the message); retries happen in docker_ops.
    """
    try:
        state = docker.container_state(container_id)
        if state is None:
            return f"container {name} no longer exists; nothing to put back"
        if action == PAUSED and state == "paused":
            docker.unpause(container_id)
        elif action in (STOPPED, STOPPED_PAUSED) and state in ("exited", "created"):
            docker.start(container_id)
            if action == STOPPED_PAUSED:
                docker.pause(container_id)
        # Otherwise someone already changed it (unpaused or started it by hand): leave it alone.
        return None
    except CoordError as error:
        fix = "docker unpause" if action == PAUSED else "docker start"
        return f"could not put {name} back ({error.message}); run: {fix} {name}   (or: coord recover)"


@contextmanager
def quiesced(
    group: QuiesceGroup,
    docker: Engine,
    journal: Journal,
    actions: list[ContainerAction],
    strategy: Strategy | None = None,
    stop_paused: bool = False,
) -> Iterator[list[ContainerAction]]:
    """Hold the group's containers paused (pause, snapshot) or stopped (stop) for the block; put them back
    however it ends. `strategy` overrides the group's (auto escalating to pause, stop or snapshot).
    `stop_paused` (restore): paused containers are stopped too, and paused again once started.

    Each container's action is appended to `actions` as it happens, so the caller has the record even when
    quiescing fails halfway (and the containers already changed were put back).
    """
    strategy = strategy or group.strategy
    if strategy not in QUIESCING:
        yield actions
        return
    hold = _Hold(strategy, group.stop_timeout, stop_paused, docker, journal, actions)
    undo = hold.undo
    unsafe: ContainersMustStayDown | None = None
    try:
        services = _claim_services(group, hold)
        for container in group.containers:
            # Signals wait while a container changes state: an API call cut in half would leave coord unsure
            # what the engine did. They are raised between containers, or during the archive itself.
            with deferred():
                if container.swarm_service is not None and hold.strategy is Strategy.STOP:
                    _scale_down(services.pop(container.swarm_service, None), group, hold)
                else:
                    _quiesce_one(container, hold)
        yield actions
    except ContainersMustStayDown as error:
        unsafe = error
        raise
    finally:
        with deferred():
            if unsafe is None:
                for restore in reversed(undo):
                    restore()
            else:  # their journal entries stay: `coord recover` starts them once the volume is whole again
                for action in actions:
                    if action.action in (PAUSED, STOPPED):
                        action.restored = False
                        action.error = "left stopped: the volume is half-replaced; run `coord recover`"
                        steps.info("%s left %s: its volume is half-replaced", action.container, action.action)


@dataclass
class _Hold:
    """What quiescing one container needs: how (strategy, stop timeout, stop paused ones too), the engine, the
    journal, the record of actions, and the undo list each change registers itself on."""

    strategy: Strategy
    stop_timeout: int
    stop_paused: bool
    docker: Engine
    journal: Journal
    actions: list[ContainerAction]
    undo: list[Callable[[], None]] = field(default_factory=list)


def _claim_services(group: QuiesceGroup, hold: _Hold) -> dict[str, list[ContainerInfo]]:
    """Claim each Swarm service with tasks in the group (release registered as an undo, so it runs last); under
    stop, refuse a global service before anything is claimed or changed. Returns service id -> its tasks here."""
    services = swarm.services_of(group.containers)
    if not services:
        return services
    read = [swarm.read_service(hold.docker, service_id) for service_id in services]
    if hold.strategy is Strategy.STOP:
        for service in read:
            if service.is_global:
                raise CoordError(swarm.global_refusal(service))
    node = hold.docker.swarm_node() or "unknown node"
    run = swarm.new_run_id()
    for service in read:
        with deferred():
            claim, entry = swarm.take_claim(hold.docker, hold.journal, service.id, node, run)
            hold.undo.append(_claim_releaser(service, claim, entry, hold))
    return services


def _claim_releaser(service: ServiceInfo, claim: swarm.Claim, entry: JournalEntry, hold: _Hold) -> Callable[[], None]:
    def release() -> None:
        if any(action.id == service.id and not action.restored for action in hold.actions):
            log.error("keeping the claim on service %s until it is scaled back (coord recover)", service.name)
            return  # its journal entry stays: `coord recover` releases it once the service is back
        error = swarm.release_claim(hold.docker, service.id, claim)
        if error is None:
            hold.journal.clear(entry)
        else:  # the entry stays for `coord recover`; the deadline frees the service anyway
            log.error("%s", error)

    return release


def _scale_down(tasks: list[ContainerInfo] | None, group: QuiesceGroup, hold: _Hold) -> None:
    """Scale a replicated service to 0 for the window (once, at its first task container): journal its replica
    count, register the scale back, then act."""
    if not tasks:  # this service was already scaled down at an earlier task container
        return
    docker, actions = hold.docker, hold.actions
    service = swarm.read_service(docker, tasks[0].swarm_service or "")  # its version after the claim
    action = ContainerAction(
        f"service {service.name}", service.id, STOPPED, f"{service.replicas} replicas", service=service.name
    )
    actions.append(action)
    if service.replicas == 0:
        action.action = "left-alone"
        return
    if service.replicas is None:
        raise CoordError(swarm.global_refusal(service))
    entry = hold.journal.record(SERVICE, service.id, SCALED_TO_ZERO, service.name, identity=str(service.replicas))
    started = time.monotonic()
    hold.undo.append(_service_restorer(action, entry, service.replicas, started, hold))
    try:
        swarm.scale_to_zero(docker, service, tasks, group.stop_timeout + swarm.TASKS_DOWN_MARGIN_S)
    except CoordError as error:
        action.action = "failed"
        action.error = f"could not scale to 0: {error.message}"
        raise
    steps.info("service %s scaled to 0 in %.2f s", service.name, time.monotonic() - started)


def _service_restorer(
    action: ContainerAction, entry: JournalEntry, replicas: int, started: float, hold: _Hold
) -> Callable[[], None]:
    def restore() -> None:
        error = swarm.scale_back(hold.docker, action.id, entry.name, replicas)
        action.seconds = time.monotonic() - started
        if error is None:
            hold.journal.clear(entry)
        else:
            action.restored = False
            action.error = error
            log.error("%s", error)

    return restore


def _quiesce_one(container: ContainerInfo, hold: _Hold) -> None:
    """Pause or stop one container if it runs: journal first, register the undo, then act."""
    docker, actions = hold.docker, hold.actions
    state = docker.container_state(container.id)
    if hold.stop_paused and hold.strategy is Strategy.STOP and state == "paused":
        verb = STOPPED_PAUSED
    elif state != "running":
        log.info("%s is %s: left alone", container.name, state or "gone")
        actions.append(
            ContainerAction(
                container.name,
                container.id,
                "left-alone",
                prior_state=state or "gone",
                service=container.swarm_service_name,
            )
        )
        return
    else:
        verb = STOPPED if hold.strategy is Strategy.STOP else PAUSED
    entry = hold.journal.record(CONTAINER, container.id, verb, container.name)
    action = ContainerAction(
        container.name,
        container.id,
        STOPPED if verb == STOPPED_PAUSED else verb,
        state,
        service=container.swarm_service_name,
    )
    actions.append(action)
    # Registered before acting: the undo only acts on a container that is paused/stopped (put_back checks),
    # so it is right whether the call below succeeds, fails, or fails after the engine acted.
    hold.undo.append(_restorer(action, entry, time.monotonic(), docker, hold.journal))
    if verb == PAUSED:
        steps.info("pausing %s", container.name)
    else:
        steps.info("stopping %s (up to %ds, then it is killed)", container.name, hold.stop_timeout)
    acting = time.monotonic()
    try:
        if verb == PAUSED:
            docker.pause(container.id)
        else:
            docker.stop(container.id, hold.stop_timeout)  # works on a paused container too
    except CoordError as error:
        action.action = "failed"
        action.error = f"could not {'pause' if verb == PAUSED else 'stop'}: {error.message}"
        raise
    steps.info("%s %s in %.2f s", container.name, action.action, time.monotonic() - acting)


def _restorer(
    action: ContainerAction, entry: JournalEntry, started: float, docker: Engine, journal: Journal
) -> Callable[[], None]:
    def restore() -> None:
        steps.info("%s %s", "unpausing" if entry.action == PAUSED else "starting", action.container)
        error = put_back(docker, action.id, action.container, entry.action)
        action.seconds = time.monotonic() - started
        if error is None:
            steps.info("%s back after %.2f s %s", action.container, action.seconds, action.action)
            try:
                journal.clear(entry)
            except CoordError as journal_error:  # the container is back; the next recovery finds it so
                action.error = journal_error.message
                log.error("%s", journal_error.message)
        else:
            action.restored = False
            action.error = error
            log.error("%s", error)

    return restore
