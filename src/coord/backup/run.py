"""One backup run from start to finish (the steps of a group: steps.py):

    load policies -> plan -> lock -> recover what a dead run left -> for each quiesce group:
        admit each volume -> before hooks -> the window (pause/stop/snapshot, archive each to .partial,
        unpause/start; auto: live first, escalate once) -> after hooks -> publish each

Policy problems are raised before anything is touched. Problems of one volume fail that volume, not the run;
containers or after hooks that could not be put right are run-level errors (exit 1, loud).
"""

from __future__ import annotations

from coord.backup.auto import run_auto
from coord.backup.context import BackupRequest, Progress, RunContext
from coord.backup.hooks import run_after_hooks, run_before_hooks
from coord.backup.job import Job, admit
from coord.backup.publish import publish_job
from coord.backup.steps import Step, StepKind, escalation_of, policies_of
from coord.backup.window import Window
from coord.docker_ops import Engine
from coord.errors import CoordError
from coord.hooks import HookRun
from coord.journal import Journal
from coord.lock import run_lock
from coord.node import node_of_engine
from coord.plan import QuiesceGroup, group_volumes, plan_volumes
from coord.policy import Strategy, load_policies
from coord.recovery import recover
from coord.results import RunResult, VolumeResult
from coord.signals import termination_raises
from coord.sources import own_container_id


def run_backup(
    request: BackupRequest, docker: Engine, progress: Progress | None = None, steps: list[Step] | None = None
) -> RunResult:
    """Back up every volume the selected policies cover. `steps`, when given, receives each step executed.

    Raises PolicyError/UsageError before anything is touched, LockError when another run holds the state
    directory, Interrupted on SIGTERM/SIGINT (after every container was put back).
    """
    policies = load_policies(request.policies_dir, request.policy_names or None)
    plans = plan_volumes(policies, docker.volume_names(), request.policy_names or None)
    node = node_of_engine(docker)  # a Swarm node writes into its own namespace on every target (_nodes/<node>/)
    targets = [target.for_node(node) for target in request.run_targets()]
    ctx = RunContext(
        request, docker, Journal(request.state_dir), progress, steps=[] if steps is None else steps, targets=targets
    )
    result = RunResult()
    with run_lock(request.state_dir, request.lock_timeout_s), termination_raises():
        recovery = recover(ctx.journal, docker)
        result.recovered = recovery.restored + [f"removed {path}" for path in recovery.removed_partials]
        result.recovered += [f"left alone {line}" for line in recovery.left_alone]
        result.errors.extend(recovery.errors)
        for group in group_volumes(plans, docker, own_container_id()):
            volumes, errors = back_up_group(group, ctx.for_group())
            result.volumes.extend(volumes)
            result.errors.extend(errors)
    return result


def back_up_group(group: QuiesceGroup, ctx: RunContext) -> tuple[list[VolumeResult], list[str]]:
    """Back up the volumes of one quiesce group.

    Returns their results and the run-level errors: containers or after hooks that could not be put right,
    which the operator must act on. Containers come back as soon as the data is read, before the checks.
    """
    admitted = [admit(plan, group.errors.get(plan.volume), ctx) for plan in group.volumes]
    results = [result for result, _ in admitted]
    jobs = [job for _, job in admitted if job is not None]
    for result in results:
        if result.strategy is Strategy.EXCLUDE and not result.errors:
            ctx.record(Step(StepKind.EXCLUDE, volume=result.volume))
    if not jobs:
        return results, []
    hook_runs, hooked, blocked = run_before_hooks(policies_of([job.plan for job in jobs]), ctx)
    quiesce_error: str | None = None
    try:
        if blocked is None:
            quiesce_error = _read(group, jobs, ctx)
    finally:
        hook_runs += run_after_hooks(hooked, ctx)
    for job in jobs:
        _give_group_record(job, ctx, hook_runs)
        if quiesce_error:
            job.result.errors.append(quiesce_error)
        elif not blocked:
            publish_job(job, ctx)
    run_errors = [f"container {a.container}: {a.error}" for a in ctx.actions if not a.restored and a.error]
    run_errors += [f"policy {run.policy}: {run.error}" for run in hook_runs if run.phase == "after" and run.error]
    return results, run_errors


def _read(group: QuiesceGroup, jobs: list[Job], ctx: RunContext) -> str | None:
    """Read the jobs' volumes with the group's strategy (auto: live first, then escalated). Returns the error
    when the containers could not be quiesced (nothing of this group is then published)."""
    plans = [job.plan for job in jobs]
    attempted = escalation_of(plans) if group.strategy is Strategy.AUTO else group.strategy  # who quiesces
    try:
        if group.strategy is Strategy.AUTO:
            run_auto(group, jobs, ctx)
        else:
            Window(group, group.strategy, jobs, ctx).run()
    except CoordError as error:
        verb = "stop" if attempted is Strategy.STOP else "pause"
        return f"could not {verb} containers: {error.message}"
    return None


def _give_group_record(job: Job, ctx: RunContext, hook_runs: list[HookRun]) -> None:
    """What the group did that the volume's result records: the container actions, its policy's hooks, and its
    policy's failed before hooks as errors."""
    name = job.plan.policy.name
    job.result.containers = ctx.actions
    job.result.hooks = [run for run in hook_runs if run.policy == name]
    job.result.errors += [run.error for run in hook_runs if run.policy == name and run.phase == "before" and run.error]
