"""A group's hooks (coord/hooks.py runs one): before hooks in policy order, after hooks in reverse policy order.

A failing before hook under `on_error: fail` stops the before hooks and blocks archiving; after hooks run for
every policy whose before hooks started (all or some), whatever happened in between.
"""

from __future__ import annotations

from coord.backup.context import RunContext
from coord.backup.steps import StepKind, hooks_in_order
from coord.hooks import HookRun, run_hook
from coord.policy import LoadedPolicy, OnHookError


def run_before_hooks(
    policies: list[LoadedPolicy], ctx: RunContext
) -> tuple[list[HookRun], list[LoadedPolicy], str | None]:
    """Run before hooks in policy order. Returns the runs, the policies whose hooks started (their after hooks
    must run), and the error that blocks archiving (a failing hook under on_error: fail), if any."""
    runs: list[HookRun] = []
    hooked: list[LoadedPolicy] = []
    for item in policies:
        hooked.append(item)
        for step, _, hook in hooks_in_order([item], StepKind.BEFORE_HOOK):
            ctx.record(step)
            run = run_hook(hook, "before", item.name, ctx.docker)
            runs.append(run)
            if run.error and item.policy.hooks.on_error is OnHookError.FAIL:
                run.error += " (nothing archived: hooks.on_error is fail)"
                return runs, hooked, run.error
    return runs, hooked, None


def run_after_hooks(hooked: list[LoadedPolicy], ctx: RunContext) -> list[HookRun]:
    """Run the after hooks of the policies whose before hooks started, in reverse policy order."""
    runs: list[HookRun] = []
    for step, item, hook in hooks_in_order(hooked, StepKind.AFTER_HOOK):
        ctx.record(step)
        runs.append(run_hook(hook, "after", item.name, ctx.docker))
    return runs
