"""`coord plan`'s words for a quiesce group: the steps `steps.group_steps` lists, the same list the run
executes, each said as an operator reads it."""

from __future__ import annotations

from collections.abc import Collection

from coord.backup.steps import Step, StepKind, escalation_of, group_steps
from coord.docker_ops import ContainerInfo
from coord.plan import QuiesceGroup, VolumePlan
from coord.policy import Strategy

_VERBS = {Strategy.STOP: ("stop", "start")}  # pause and snapshot pause, then unpause


def describe_group(group: QuiesceGroup, remote_only: Collection[str] = ()) -> list[str]:
    """The actions coord takes for this group, in order, as an operator reads them; `remote_only`: the volumes
    whose targets are all remote (steps.remote_only_volumes)."""
    lines: list[str] = []
    names = ", ".join(plan.volume for plan in group.volumes)
    if len(group.volumes) > 1:
        lines.append(f"volumes {names} share containers: they are quiesced once, for all of them")
    for plan in group.volumes:
        error = plan.error or group.errors.get(plan.volume)
        if error:
            lines.append(f"{plan.volume}: FAILS: {error}")
    runnable = [plan for plan in group.volumes if not (plan.error or plan.volume in group.errors)]
    if group.strategy is Strategy.EXCLUDE:
        return [*lines, f"{names}: excluded by policy: nothing archived, no container touched"]
    plans = {plan.volume: plan for plan in runnable}
    escalating = False
    for number, step in enumerate(group_steps(group, runnable, remote_only), start=1):
        if step.escalated and not escalating:
            escalating = True
            lines.append(f"   otherwise, once, with strategy {escalation_of(runnable).value}:")
        lines.append(f"{number}. {_describe(step, group, plans, remote_only)}")
        if step.kind is StepKind.QUIESCE:
            idle = [f"{c.name} ({c.state})" for c in group.containers if c.state != "running"]
            if idle:
                lines.append(f"   left alone, not running: {', '.join(idle)}")
    return lines


def _describe(step: Step, group: QuiesceGroup, plans: dict[str, VolumePlan], remote_only: Collection[str]) -> str:
    plan = plans.get(step.volume or "")
    if step.hook is not None:
        hook, phase = step.hook, "before" if step.kind is StepKind.BEFORE_HOOK else "after"
        timeout = f", {hook.timeout_s}s" if phase == "before" else ""
        return f"exec in {hook.container}: {' '.join(hook.exec)} ({phase} hook of {step.policy}{timeout})"
    if step.kind in (StepKind.QUIESCE, StepKind.RESUME):
        return _describe_containers(step, group)
    if plan is None:  # not reached: every other step names a volume of the group
        return f"{step.kind.value} {step.volume}"
    if step.kind in (StepKind.SPOOL, StepKind.UPLOAD):
        return _describe_spool(step, plan)
    return _describe_volume_step(step, group, plan, plan.volume in remote_only)


def _describe_containers(step: Step, group: QuiesceGroup) -> str:
    verbs = _VERBS.get(step.strategy or group.strategy, ("pause", "unpause"))
    if step.strategy is Strategy.STOP and any(c.swarm_service for c in group.containers):
        return _describe_swarm_stop(step, group)
    running = [_named(c) for c in group.containers if c.state == "running"]
    if step.kind is StepKind.RESUME:
        return f"{verbs[1]} {', '.join(reversed(running))}, in this order" if running else f"{verbs[1]} nothing"
    timeout = f" (timeout {group.stop_timeout}s)" if step.strategy is Strategy.STOP else ""
    return f"{verbs[0]} {', '.join(running) or 'nothing (no running container)'}, in this order{timeout}"


def _named(container: ContainerInfo) -> str:
    """A container's name, with its node, service and task when it is a Swarm task."""
    return f"{container.name} [{container.swarm_place}]" if container.swarm_service else container.name


def _describe_swarm_stop(step: Step, group: QuiesceGroup) -> str:
    """Stop with Swarm tasks: plain containers are stopped, each replicated service scaled to 0 and back."""
    running = [c for c in group.containers if c.state == "running"]
    plain = [c.name for c in running if not c.swarm_service]
    services = list(dict.fromkeys(c.swarm_service_name or "?" for c in running if c.swarm_service))
    tasks = ", ".join(_named(c) for c in running if c.swarm_service)
    if step.kind is StepKind.RESUME:
        back = [f"scale service {name} back to its replica count" for name in reversed(services)]
        return "; ".join([*back, *([f"start {', '.join(reversed(plain))}"] if plain else [])])
    scale = [f"claim and scale service {name} to 0" for name in services]
    stop = [f"stop {', '.join(plain)} (timeout {group.stop_timeout}s)"] if plain else []
    return "; ".join([*scale, *stop]) + f", in this order (tasks here: {tasks})"


def _describe_spool(step: Step, plan: VolumePlan) -> str:
    """A volume whose targets are all remote, read while its containers wait: spooled, uploaded after."""
    strategy = step.strategy.value if step.strategy else ""
    if step.kind is StepKind.SPOOL:
        return (
            f"archive {plan.volume} (policy {plan.policy.name}, {strategy}) to a local spool file in coord's state "
            "directory (uploads/), not straight to its remote targets: containers never wait for an upload. It "
            "needs local free space for the archive until it is uploaded (snapshot or live stream a volume larger "
            "than the free disk)"
        )
    when = f"if it was read again with {strategy}: " if step.escalated else ""
    return (
        f"{when}upload the spooled archive of {plan.volume} and its manifest to each of its targets (containers "
        "are back), checked like any upload; then remove the spool"
    )


def _describe_volume_step(step: Step, group: QuiesceGroup, plan: VolumePlan, streamed: bool) -> str:
    volume, policy = plan.volume, plan.policy.policy
    if step.kind is StepKind.LINK_SNAPSHOT:
        return (
            f"snapshot {volume}: hard links (or reflinks) under .coord-snapshot-*, no data copied, containers running"
        )
    if step.kind is StepKind.UPDATE_SNAPSHOT:
        return f"bring the snapshot of {volume} up to date while paused"
    if step.kind is StepKind.JUDGE:
        limit = policy.max_vanished
        return f"keep the live archive of {volume} unless its verdict is at-risk" + (
            f" or more than {limit} entries vanished" if limit is not None else ""
        )
    if step.kind is StepKind.PUBLISH:
        retention = ", then apply retention" if policy.retention is not None else ""
        return f"check the archive of {volume} against what tar read, publish it and its manifest{retention}"
    to = " streamed to its remote target (no local copy)," if streamed else ""
    if step.strategy is Strategy.SNAPSHOT:
        return f"archive {volume} from its snapshot,{to} then remove the snapshot (policy {plan.policy.name})"
    users = group.users.get(volume, [])
    keep = f" while {', '.join(users)} keep running" if step.strategy is Strategy.LIVE and users else ""
    return (
        f"archive {volume} (policy {plan.policy.name}, {step.strategy.value if step.strategy else ''}){keep}"
        + to.rstrip(",")
    )
