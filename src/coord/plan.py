"""Planning a run: which policy owns which volume, which containers each touches, and in what order.

`coord plan` prints exactly what `coord backup` will then do, because both use the groups built here and the
steps of coord/backup/steps.py.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field

from coord.docker_ops import ContainerInfo, Engine
from coord.errors import CoordError, PolicyError
from coord.policy import Escalation, LoadedPolicy, Strategy, is_glob, location_in
from coord.swarm import global_refusal

QUIESCING = (Strategy.PAUSE, Strategy.STOP, Strategy.SNAPSHOT)  # strategies that change containers' state
WITH_CONTAINERS = (*QUIESCING, Strategy.AUTO)  # strategies that need to know the containers


@dataclass(frozen=True)
class VolumePlan:
    """One volume to back up under one policy, or a pattern that matched nothing (`error`)."""

    volume: str
    policy: LoadedPolicy
    error: str | None = None

    @property
    def strategy(self) -> Strategy:
        return self.policy.policy.strategy


@dataclass
class QuiesceGroup:
    """Volumes archived inside one quiesce window: their containers are paused/stopped once for all of them."""

    strategy: Strategy
    volumes: list[VolumePlan]
    containers: list[ContainerInfo] = field(default_factory=list)  # in stop order; restored in reverse
    users: dict[str, list[str]] = field(default_factory=dict)  # volume -> names of containers mounting it
    stop_timeout: int = 30
    errors: dict[str, str] = field(default_factory=dict)  # volume -> why it cannot run

    @property
    def policies(self) -> list[LoadedPolicy]:
        seen: dict[str, LoadedPolicy] = {}
        for plan in self.volumes:
            seen.setdefault(plan.policy.name, plan.policy)
        return list(seen.values())


def plan_volumes(
    policies: Sequence[LoadedPolicy], existing_volumes: Sequence[str], selected: Sequence[str] | None = None
) -> list[VolumePlan]:
    """Decide which policy backs up which existing volume, for the `selected` policies (all when None).

    Ownership is decided over all policies, selected or not, so `--policy a` never takes a volume that policy b
    names exactly. An exact name beats a glob; two policies whose globs match one volume is a PolicyError (the
    operator must say which owns it). An exact name that does not exist, or a glob matching nothing, becomes a
    failed plan: a backup that silently stops covering a volume is worse than a loud failure.
    """
    exact_owner = {pattern: item for item in policies for pattern in item.policy.volumes if not is_glob(pattern)}
    glob_owner: dict[str, LoadedPolicy] = {}
    missing: list[VolumePlan] = []
    conflicts: list[str] = []
    for item in policies:
        optional = item.policy.strategy is Strategy.EXCLUDE
        for pattern in item.policy.volumes:
            if not is_glob(pattern):
                if pattern not in existing_volumes and not optional:
                    missing.append(VolumePlan(pattern, item, f"volume '{pattern}' does not exist (docker volume ls)"))
                continue
            matches = [name for name in existing_volumes if fnmatch.fnmatchcase(name, pattern)]
            if not matches and not optional:
                missing.append(VolumePlan(pattern, item, f"pattern '{pattern}' matches no volume (docker volume ls)"))
            for name in matches:
                if name in exact_owner:
                    continue
                owner = glob_owner.setdefault(name, item)
                if owner.name != item.name:
                    where = location_in(item.path, ("volumes", item.policy.volumes.index(pattern)))
                    conflicts.append(
                        f"{where}: volumes: '{name}' is matched by policy '{owner.name}' and by '{item.name}'; "
                        "name it exactly in the one that should own it"
                    )
    if conflicts:
        raise PolicyError(conflicts)
    wanted = set(selected) if selected else {item.name for item in policies}
    owners = {**glob_owner, **exact_owner}
    plans = [plan for plan in missing if plan.policy.name in wanted]
    plans += [
        VolumePlan(name, owners[name]) for name in existing_volumes if owners.get(name) and owners[name].name in wanted
    ]
    return sorted(plans, key=lambda plan: (plan.policy.name, plan.volume))


def uncovered_volumes(policies: Sequence[LoadedPolicy], existing_volumes: Sequence[str]) -> list[str]:
    """The existing volumes no policy names or matches: they are not backed up (a policy with strategy exclude
    covers a volume: leaving it out is then a decision, not an oversight)."""
    return [name for name in existing_volumes if not any(item.policy.selects(name) for item in policies)]


def engine_problems(policies: Sequence[LoadedPolicy], existing_volumes: Sequence[str]) -> list[str]:
    """What `coord validate --docker` reports: each policy's volumes that do not exist or globs that match none,
    and volumes matched by two policies' globs, as `file:line: volumes: problem`."""
    try:
        plans = plan_volumes(policies, existing_volumes)
    except PolicyError as error:
        return list(error.problems)
    return [
        f"{location_in(plan.policy.path, ('volumes', plan.policy.policy.volumes.index(plan.volume)))}: volumes: "
        f"{plan.error}"
        for plan in plans
        if plan.error
    ]


def resolve_containers(reference: str, docker: Engine) -> list[ContainerInfo]:
    found = docker.find_containers(reference)
    if not found:
        raise CoordError(f"containers: '{reference}' matches no container (by name or compose service)")
    return found


def group_volumes(plans: Sequence[VolumePlan], docker: Engine, own_container: str | None = None) -> list[QuiesceGroup]:
    """Group the runnable plans so that a container shared by several volumes is quiesced once.

    `own_container` (coord's own, when it runs as a sidecar mounting the volumes) is never quiesced.

    Volumes are grouped when their policies agree (same strategy and stop timeout, and for auto the same
    escalate_to) and their container sets overlap; each group's containers are in stop order (policy stop_order
    first, then by name). Volumes that share containers but not those settings get one quiesce window each.
    """
    groups: list[QuiesceGroup] = []
    for plan in plans:
        if plan.error or plan.strategy is Strategy.EXCLUDE:
            groups.append(QuiesceGroup(plan.strategy, [plan]))
            continue
        policy = plan.policy.policy
        group = QuiesceGroup(plan.strategy, [plan], stop_timeout=policy.stop_timeout)
        try:
            users = [c for c in docker.containers_using(plan.volume) if c.id != own_container]
            group.users[plan.volume] = [c.name for c in users]
            if plan.strategy in WITH_CONTAINERS:
                extra = [c for reference in policy.containers for c in resolve_containers(reference, docker)]
                group.containers = _unique(users + extra)
                refusal = _global_service_under_stop(plan, group.containers, docker)
                if refusal:
                    group.errors[plan.volume] = f"policy {plan.policy.name}: {refusal}"
        except CoordError as error:
            group.errors[plan.volume] = f"policy {plan.policy.name}: {error.message}"
        groups.append(group)
    return _order_containers(_merge_overlapping(groups))


def _global_service_under_stop(plan: VolumePlan, containers: list[ContainerInfo], docker: Engine) -> str | None:
    """Why `stop` (or auto escalating to it) cannot hold a global Swarm service's task down, or None.

    Every Swarm service with tasks among the containers is read, whatever the strategy: coord claims it before
    touching them, so a service coord cannot read (a worker without a gateway, an unreachable gateway) raises
    CoordError here and fails the volume in the plan as it would in the backup."""
    policy = plan.policy.policy
    under_stop = plan.strategy is Strategy.STOP or (
        plan.strategy is Strategy.AUTO and policy.escalate_to is Escalation.STOP
    )
    for service_id in dict.fromkeys(c.swarm_service for c in containers if c.swarm_service):
        service = docker.service(service_id or "")
        if under_stop and service is not None and service.is_global:
            return global_refusal(service)
    return None


def _unique(containers: list[ContainerInfo]) -> list[ContainerInfo]:
    return list({c.id: c for c in containers}.values())


def _merge_overlapping(groups: list[QuiesceGroup]) -> list[QuiesceGroup]:
    merged: list[QuiesceGroup] = []
    for group in groups:
        ids = {c.id for c in group.containers}
        target = next(
            (
                other
                for other in merged
                if ids
                and other.strategy is group.strategy
                and other.stop_timeout == group.stop_timeout
                and _escalation(other) is _escalation(group)
                and ids & {c.id for c in other.containers}
            ),
            None,
        )
        if target is None:
            merged.append(group)
            continue
        target.volumes += group.volumes
        target.containers = _unique(target.containers + group.containers)
        target.users.update(group.users)
        target.errors.update(group.errors)
    return merged


def _escalation(group: QuiesceGroup) -> Escalation | None:
    """What an `auto` group escalates to (None for the other strategies). Part of the merge key: a group runs one
    escalation for all its volumes, so an auto policy must never run another policy's `escalate_to`."""
    if group.strategy is not Strategy.AUTO:
        return None
    return group.volumes[0].policy.policy.escalate_to


def _order_containers(groups: list[QuiesceGroup]) -> list[QuiesceGroup]:
    for group in groups:
        order = [reference for item in group.policies for reference in item.policy.stop_order]

        def rank(container: ContainerInfo, order: list[str] = order) -> tuple[int, str]:
            for index, reference in enumerate(order):
                if reference in (container.name, container.compose_service) or reference == (
                    f"{container.compose_project}/{container.compose_service}"
                ):
                    return index, container.name
            return len(order), container.name

        group.containers.sort(key=rank)
    return groups
