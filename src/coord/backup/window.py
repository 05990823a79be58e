"""The quiesce window: executes the steps `steps.window_steps` lists for a strategy, in that order, and records
each step it executes in the run context.

Containers are held (quiesce.py) from the QUIESCE step to the RESUME step, and put back however the window
ends; snapshots are dropped however it ends. A volume with only remote targets read while they are held is
spooled to a local file (SPOOL), never uploaded then. A volume refused at a step (its snapshot could not be
linked or brought up to date) is skipped at the steps after it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack

from coord.backup.archive import archive_job, matcher_of
from coord.backup.context import RunContext
from coord.backup.job import Job
from coord.backup.quiesce import quiesced
from coord.backup.snapshot import drop_snapshot, link_snapshot, update_snapshot
from coord.backup.steps import Step, StepKind, window_steps
from coord.plan import QuiesceGroup
from coord.policy import Strategy


class Window:
    """One read of some of a group's volumes with one strategy (live, pause, stop, snapshot)."""

    def __init__(self, group: QuiesceGroup, strategy: Strategy, jobs: list[Job], ctx: RunContext) -> None:
        self.group, self.strategy, self.ctx = group, strategy, ctx
        self.jobs = {job.volume: job for job in jobs}  # the volumes still going; a refused one leaves
        self.all_jobs = jobs
        self.held = ExitStack()  # the containers, from QUIESCE to RESUME
        self.resumed_ns = 0  # when giving the containers back began

    def run(self, escalated: bool = False) -> None:
        """Execute the window's steps; raises CoordError when the containers could not be quiesced (the ones
        already changed are back by then)."""
        actions: dict[StepKind, Callable[[Step], bool]] = {
            StepKind.LINK_SNAPSHOT: lambda step: link_snapshot(self._job(step), self.ctx),
            StepKind.QUIESCE: self._quiesce,
            StepKind.UPDATE_SNAPSHOT: self._update,
            StepKind.RESUME: self._resume,
            StepKind.ARCHIVE: self._archive,
            StepKind.SPOOL: self._spool,
        }
        remote_only = [volume for volume, job in self.jobs.items() if job.local_dest is None]
        try:
            with self.held:
                for step in window_steps(self.strategy, list(self.jobs), escalated, remote_only):
                    if step.volume is not None and not self._runs(step):
                        continue
                    if step.kind is StepKind.QUIESCE and not self._any_left():
                        return  # every volume refused: nothing to pause for
                    self.ctx.record(step)
                    if not actions[step.kind](step):
                        self.jobs.pop(step.volume or "", None)
        finally:
            for job in self.all_jobs:
                drop_snapshot(job, self.ctx)

    def _job(self, step: Step) -> Job:
        return self.jobs[step.volume or ""]

    def _runs(self, step: Step) -> bool:
        return step.volume in self.jobs

    def _any_left(self) -> bool:
        return bool(self.jobs)

    def _quiesce(self, step: Step) -> bool:
        ctx = self.ctx
        self.held.enter_context(quiesced(self.group, ctx.docker, ctx.journal, ctx.actions, self.strategy))
        return True

    def _update(self, step: Step) -> bool:
        job = self._job(step)
        update_snapshot(job)
        return job.snapshot is not None and job.snapshot.snapshot is not None

    def _resume(self, step: Step) -> bool:
        # Taken before the first container is given back: a write after this point is a write after the snapshot.
        self.resumed_ns = time.time_ns()
        self.held.close()
        return True

    def _spool(self, step: Step) -> bool:
        # Containers are held: no upload now (its speed would be their downtime); publish uploads the spool.
        archive_job(self._job(step), self.ctx, self.strategy, spool=True)
        return True

    def _archive(self, step: Step) -> bool:
        job = self._job(step)
        if self.strategy is not Strategy.SNAPSHOT:
            archive_job(job, self.ctx, self.strategy)
            return True
        snapshot = job.snapshot.snapshot if job.snapshot else None
        if snapshot is None:  # not reached: a volume whose snapshot is gone left the window at UPDATE_SNAPSHOT
            return False
        snapshot.unpaused_at_ns = self.resumed_ns
        archive_job(job, self.ctx, self.strategy, source=snapshot.read_path)
        if job.written is not None:
            job.written.snapshot = snapshot
            job.written.modified_after_snapshot = snapshot.modified_since_unpause(matcher_of(job))
        drop_snapshot(job, self.ctx)
        return True
