"""Hooks: commands run with `docker exec` before and after a group's quiesce window.

Order around the archiving step: before hooks -> pause/stop -> archive -> unpause/start -> after hooks.
Hooks run while containers are running, because exec in a paused container fails. After hooks run whenever
their policy's before hooks ran (all of them or some), also when archiving failed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from coord.docker_ops import Engine
from coord.errors import CoordError
from coord.policy import Hook

log = logging.getLogger("coord.hooks")
OUTPUT_TAIL = 500


@dataclass
class HookRun:
    phase: str  # before | after
    policy: str
    container: str
    command: list[str]
    exit_code: int | None = None
    output: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, object]:
        return {
            "phase": self.phase,
            "policy": self.policy,
            "container": self.container,
            "command": self.command,
            "exit_code": self.exit_code,
            "error": self.error,
        }


def run_hook(hook: Hook, phase: str, policy: str, docker: Engine) -> HookRun:
    """Run one hook; never raises for a failing command (the result says what happened)."""
    run = HookRun(phase=phase, policy=policy, container=hook.container, command=list(hook.exec))
    try:
        targets = docker.find_containers(hook.container)
        if not targets:
            run.error = f"{phase} hook: no container '{hook.container}' (by name or compose service)"
            return run
        exit_code, output = docker.exec(targets[0].id, list(hook.exec), hook.timeout_s)
    except CoordError as error:
        run.error = f"{phase} hook in {hook.container}: {error.message}"
        return run
    run.exit_code, run.output = exit_code, output[-OUTPUT_TAIL:]
    if exit_code is None:
        run.error = f"{phase} hook in {hook.container} timed out after {hook.timeout_s}s: {' '.join(hook.exec)}"
    elif exit_code != 0:
        tail = output.strip().splitlines()[-1:] if output.strip() else []
        said = f": {tail[0]}" if tail else ""
        run.error = f"{phase} hook in {hook.container} exited {exit_code}: {' '.join(hook.exec)}{said}"
    log.info("%s hook in %s: %s -> %s", phase, hook.container, " ".join(hook.exec), run.error or "ok")
    return run
