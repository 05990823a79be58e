"""The steps a quiesce group's run executes, as data: the run executes these lists, and `coord plan` prints the
same lists (plan.py), so the two cannot drift.

    before hooks -> [auto: archive live, judge each -> if any must escalate: the window of escalate_to]
                 |  the window of the group's strategy
    -> after hooks -> publish each

The window of a strategy (window.py executes it):
    live      archive each
    pause     pause the containers -> archive each -> unpause them
    stop      stop the containers -> archive each -> start them
    snapshot  link each (containers running) -> pause -> bring each link up to date -> unpause
              -> archive each from its snapshot, then remove the snapshot

A volume whose targets are all remote streams its archive to the first of them while it is read (no local
copy), except inside the pause/stop window: there an upload's speed would bound how long the containers wait, so
its archive is spooled to a local file instead (SPOOL), and uploaded once the containers are back (UPLOAD, right
after the volume's PUBLISH check), then the spool is removed.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum

from coord.plan import QuiesceGroup, VolumePlan
from coord.policy import Hook, LoadedPolicy, Strategy
from coord.targets import Target, targets_of


class StepKind(StrEnum):
    EXCLUDE = "exclude"  # strategy exclude: nothing archived, no container touched
    BEFORE_HOOK = "before-hook"
    LINK_SNAPSHOT = "link-snapshot"  # hard links (or reflinks) of the volume's tree, containers running
    QUIESCE = "quiesce"  # pause or stop the group's running containers
    UPDATE_SNAPSHOT = "update-snapshot"  # bring the links up to date, containers paused
    RESUME = "resume"  # unpause or start them again
    ARCHIVE = "archive"  # one volume (or its snapshot) to its .partial file, or streamed to its remote target
    SPOOL = "spool"  # inside the window, targets all remote: the archive to a local spool file (uploaded at UPLOAD)
    JUDGE = "judge"  # strategy auto: keep the live archive, or discard it and escalate
    AFTER_HOOK = "after-hook"
    PUBLISH = "publish"  # decide status -> check -> rename + manifest -> retention
    UPLOAD = "upload"  # a spooled archive and its manifest to each remote target, containers back; spool removed


@dataclass(frozen=True)
class Step:
    """One step: its kind, what it acts on (a volume, or a policy's hook), the strategy it reads or quiesces
    with, and whether it runs only when strategy auto escalates."""

    kind: StepKind
    volume: str | None = None
    policy: str | None = None
    hook: Hook | None = None
    strategy: Strategy | None = None
    escalated: bool = False

    @property
    def key(self) -> tuple[str, str | None, str | None]:
        """What a test compares: kind, subject and strategy (not the hook's settings)."""
        return self.kind.value, self.volume or self.policy, self.strategy.value if self.strategy else None


QUIESCING = (Strategy.PAUSE, Strategy.STOP)  # the strategies that read the volumes while the containers wait


def window_steps(
    strategy: Strategy, volumes: Sequence[str], escalated: bool = False, remote_only: Collection[str] = ()
) -> list[Step]:
    """The steps of one read of `volumes` with `strategy` (live, pause, stop or snapshot), in order. The volumes in
    `remote_only` (no local target) are spooled when read inside the window (SPOOL), streamed otherwise."""

    def each(kind: StepKind) -> list[Step]:
        return [Step(kind, volume=volume, strategy=strategy, escalated=escalated) for volume in volumes]

    window = [Step(StepKind.QUIESCE, strategy=strategy, escalated=escalated)]
    resume = [Step(StepKind.RESUME, strategy=strategy, escalated=escalated)]
    if strategy is Strategy.SNAPSHOT:
        return each(StepKind.LINK_SNAPSHOT) + window + each(StepKind.UPDATE_SNAPSHOT) + resume + each(StepKind.ARCHIVE)
    if strategy in QUIESCING:
        kinds = {volume: StepKind.SPOOL if volume in remote_only else StepKind.ARCHIVE for volume in volumes}
        reads = [Step(kinds[volume], volume, strategy=strategy, escalated=escalated) for volume in volumes]
        return window + reads + resume
    return each(StepKind.ARCHIVE)


def hooks_in_order(policies: Sequence[LoadedPolicy], kind: StepKind) -> list[tuple[Step, LoadedPolicy, Hook]]:
    """Each hook step with its policy and hook: before hooks in policy order, after hooks in the reverse policy
    order (each policy's own hooks in their order)."""
    if kind is StepKind.BEFORE_HOOK:
        return [
            (Step(kind, policy=item.name, hook=hook), item, hook)
            for item in policies
            for hook in item.policy.hooks.before
        ]
    return [
        (Step(kind, policy=item.name, hook=hook), item, hook)
        for item in reversed(policies)
        for hook in item.policy.hooks.after
    ]


def hook_steps(policies: Sequence[LoadedPolicy], kind: StepKind) -> list[Step]:
    return [step for step, _, _ in hooks_in_order(policies, kind)]


def policies_of(plans: Sequence[VolumePlan]) -> list[LoadedPolicy]:
    """The policies of `plans`, each once, in the order of first appearance."""
    return list({plan.policy.name: plan.policy for plan in plans}.values())


def escalation_of(plans: Sequence[VolumePlan]) -> Strategy:
    """The strategy auto escalates to for these volumes (planning groups only volumes that agree on it)."""
    return Strategy(plans[0].policy.policy.escalate_to.value)


def group_steps(group: QuiesceGroup, runnable: Sequence[VolumePlan], remote_only: Collection[str] = ()) -> list[Step]:
    """Every step of the group's run, in order, for the volumes that can run (`runnable`); `remote_only`: the
    volumes whose targets are all remote (`remote_only_volumes`)."""
    if group.strategy is Strategy.EXCLUDE:
        return [Step(StepKind.EXCLUDE, volume=plan.volume) for plan in runnable]
    if not runnable:
        return []
    volumes = [plan.volume for plan in runnable]
    policies = policies_of(runnable)
    steps = hook_steps(policies, StepKind.BEFORE_HOOK)
    quiesced_read: Strategy = group.strategy  # the read that spools, when the strategy quiesces
    escalated = False
    if group.strategy is Strategy.AUTO:
        steps += window_steps(Strategy.LIVE, volumes)
        steps += [Step(StepKind.JUDGE, volume=volume, strategy=Strategy.AUTO) for volume in volumes]
        quiesced_read, escalated = escalation_of(runnable), True
        steps += window_steps(quiesced_read, volumes, escalated=True, remote_only=remote_only)
    else:
        steps += window_steps(group.strategy, volumes, remote_only=remote_only)
    steps += hook_steps(policies, StepKind.AFTER_HOOK)
    for volume in volumes:
        steps.append(Step(StepKind.PUBLISH, volume=volume))
        if quiesced_read in QUIESCING and volume in remote_only:  # auto: only once escalated
            steps.append(Step(StepKind.UPLOAD, volume=volume, strategy=quiesced_read, escalated=escalated))
    return steps


def remote_only_volumes(plans: Sequence[VolumePlan], run_targets: Sequence[Target]) -> set[str]:
    """The volumes of `plans` whose targets in this run are all remote: their archives stream to a remote (or are
    spooled, inside a window). A run decides the same from the volume's admitted targets (job.Job.local_dest)."""
    return {
        plan.volume
        for plan in plans
        if (targets := targets_of(plan.policy.policy, run_targets)) and not any(t.is_local for t in targets)
    }
