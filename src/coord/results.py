"""What a run produced, per volume, and its stable JSON shape (documented in README.md, "JSON output")."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from coord.consistency import Verdict
from coord.hooks import HookRun
from coord.policy import Strategy
from coord.problems import ProblemKind


class VolumeStatus(StrEnum):
    OK = "ok"
    WARNING = "warning"
    FAILED = "failed"
    EXCLUDED = "excluded"


@dataclass
class ContainerAction:
    """What coord did to one container around a volume's archiving step, and for how long."""

    container: str
    id: str
    action: str  # "paused" | "stopped" | "left-alone" (not running: coord does not touch it) | "failed"
    prior_state: str
    seconds: float = 0.0
    restored: bool = True
    error: str | None = None
    service: str | None = None  # the Swarm service (its name, from the task's labels) the container is a task of

    def to_json(self) -> dict[str, Any]:
        return {
            "container": self.container,
            "id": self.id[:12],
            "action": self.action,
            "prior_state": self.prior_state,
            "seconds": round(self.seconds, 3),
            "restored": self.restored,
            "error": self.error,
            "service": self.service,
        }


@dataclass(frozen=True)
class Attempt:
    """Strategy auto: one read of the volume (the live one, and the escalated one if any)."""

    strategy: Strategy
    verdict: Verdict | None
    verdict_reasons: list[str]
    warnings: dict[str, int]
    entries: int
    duration_s: float
    escalated: str | None  # why this read was discarded and what was tried next; None for the kept one

    def to_json(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy.value,
            "verdict": self.verdict.value if self.verdict else None,
            "verdict_reasons": list(self.verdict_reasons),
            "warnings": dict(self.warnings),
            "entries": self.entries,
            "duration_s": round(self.duration_s, 3),
            "escalated": self.escalated,
        }


class TargetStatus(StrEnum):
    OK = "ok"  # the archive and its manifest are on the target, checked
    FAILED = "failed"  # nothing complete-looking was left there; `error` says why
    SKIPPED = "skipped"  # not tried: the volume failed before its archive could be published


@dataclass
class TargetResult:
    """Where one volume's archive went: one entry per target of the volume (JSON `targets`)."""

    target: str
    status: TargetStatus
    ref: str | None = None  # `<target>:<volume>/<file>` when the archive is there
    error: str | None = None  # redacted: never a credential

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "status": self.status.value, "ref": self.ref, "error": self.error}


@dataclass
class VolumeResult:
    volume: str
    policy: str
    strategy: Strategy
    status: VolumeStatus
    archive: str | None = None
    manifest: str | None = None
    entries: int = 0
    size: int = 0
    verdict: Verdict | None = None
    verdict_reasons: list[str] = field(default_factory=list)
    warnings: dict[str, int] = field(
        default_factory=lambda: {kind.value: 0 for kind in ProblemKind if kind is not ProblemKind.CRITICAL}
    )
    excluded_paths: int = 0  # paths the policy's `exclude:` left out: a decision, not a warning
    errors: list[str] = field(default_factory=list)
    containers: list[ContainerAction] = field(default_factory=list)
    hooks: list[HookRun] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)  # strategy auto: each read, in order
    duration_s: float = 0.0
    pruned: list[str] = field(default_factory=list)  # older archives retention deleted after this backup
    retention_errors: list[str] = field(default_factory=list)  # the archive is good, but pruning failed
    retention_warnings: list[str] = field(default_factory=list)  # archives retention kept or left alone, and why
    targets: list[TargetResult] = field(default_factory=list)  # where the archive went, per target

    @property
    def downtime_s(self) -> float:
        """The longest time any one container was paused or stopped for this volume."""
        return max((c.seconds for c in self.containers if c.action in ("paused", "stopped")), default=0.0)

    def to_json(self) -> dict[str, Any]:
        return {
            "volume": self.volume,
            "policy": self.policy,
            "strategy": str(self.strategy),  # str(): the enum's value
            "status": self.status.value,
            "archive": self.archive,
            "manifest": self.manifest,
            "entries": self.entries,
            "size": self.size,
            "verdict": str(self.verdict) if self.verdict is not None else None,
            "verdict_reasons": self.verdict_reasons,
            "warnings": dict(self.warnings),
            "excluded_paths": self.excluded_paths,
            "errors": list(self.errors),
            "downtime_s": round(self.downtime_s, 3),
            "containers": [c.to_json() for c in self.containers],
            "hooks": [run.to_json() for run in self.hooks],
            "attempts": [attempt.to_json() for attempt in self.attempts],
            "duration_s": round(self.duration_s, 3),
            "pruned": list(self.pruned),
            "retention_errors": list(self.retention_errors),
            "retention_warnings": list(self.retention_warnings),
            "targets": [target.to_json() for target in self.targets],
        }


@dataclass
class RunResult:
    volumes: list[VolumeResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # problems of the run itself (e.g. a container not restored)
    recovered: list[str] = field(default_factory=list)  # what this run put back after an earlier, dead run
    warnings: list[str] = field(default_factory=list)  # problems that do not fail the run (a run record kept)

    @property
    def ok(self) -> bool:
        return not self.errors and all(
            v.status is not VolumeStatus.FAILED and not v.retention_errors for v in self.volumes
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "volumes": [v.to_json() for v in self.volumes],
            "errors": list(self.errors),
            "recovered": list(self.recovered),
            "warnings": list(self.warnings),
        }
