"""Strategy auto: archive live, judge each live read, and read the volumes that need it once more with the
policy's `escalate_to` (pause, stop or snapshot). Each read is recorded as an `Attempt`."""

from __future__ import annotations

import logging

from coord.backup.context import RunContext
from coord.backup.job import Job, Written
from coord.backup.publish import discard
from coord.backup.steps import Step, StepKind, escalation_of
from coord.backup.window import Window
from coord.consistency import Verdict
from coord.plan import QuiesceGroup
from coord.policy import Strategy
from coord.problems import ProblemKind
from coord.results import Attempt

log = logging.getLogger("coord")


def run_auto(group: QuiesceGroup, jobs: list[Job], ctx: RunContext) -> None:
    """Read `jobs` live, then once more with `escalate_to` those whose live read is not good enough. Raises
    CoordError when the containers could not be quiesced for that second read."""
    Window(group, Strategy.LIVE, jobs, ctx).run()
    escalating = [job for job in jobs if _judge(job, ctx)]
    if escalating:
        Window(group, escalation_of([job.plan for job in escalating]), escalating, ctx).run(escalated=True)


def escalation_reason(job: Job) -> str | None:
    """Why the live read of `job` is not good enough (verdict at-risk, too many vanished), or None to keep it.
    A read that failed outright is kept as it is: a quieter read would not fix it."""
    written = job.written
    if written is None or written.outcome.critical or written.outcome.consistency is None:
        return None
    policy = job.plan.policy.policy
    vanished = len(written.outcome.of_kind(ProblemKind.VANISHED))
    if written.outcome.consistency.verdict is Verdict.AT_RISK:
        return "verdict at-risk"
    if policy.max_vanished is not None and vanished > policy.max_vanished:
        return f"{vanished} entries vanished, more than max_vanished {policy.max_vanished}"
    return None


def _judge(job: Job, ctx: RunContext) -> bool:
    """Keep the live archive (False), or record it as a first attempt and discard it (True)."""
    ctx.record(Step(StepKind.JUDGE, volume=job.volume, strategy=Strategy.AUTO))
    reason = escalation_reason(job)
    if reason is None or job.written is None:
        return False
    escalate_to = job.plan.policy.policy.escalate_to
    job.result.attempts.append(live_attempt(job.written, f"{reason}: retried with {escalate_to.value}"))
    discard(job, job.written, ctx)  # its .partial file, or what was streamed to its remote target
    job.written = None
    log.warning("%s: live read not good enough (%s); escalating to %s", job.volume, reason, escalate_to)
    return True


def live_attempt(written: Written, escalated: str) -> Attempt:
    """The discarded live read, as an attempt (the kept read is recorded by publish.final_attempt)."""
    outcome = written.outcome
    consistency = outcome.consistency
    return Attempt(
        strategy=written.strategy,
        verdict=consistency.verdict if consistency else None,
        verdict_reasons=list(consistency.reasons) if consistency else [],
        warnings={kind.value: len(outcome.of_kind(kind)) for kind in ProblemKind if kind is not ProblemKind.CRITICAL},
        entries=outcome.entries,
        duration_s=outcome.finished_at - outcome.started_at,
        escalated=escalated,
    )
