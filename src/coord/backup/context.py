"""What a backup run is given (`BackupRequest`) and what travels with it through every step (`RunContext`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from coord.backup.steps import Step
from coord.backup.upload import Capabilities
from coord.docker_ops import Engine
from coord.encrypt import DEFAULT_STATE_DIR
from coord.errors import UsageError
from coord.journal import Journal
from coord.results import ContainerAction
from coord.sources import HOST, VolumeSources
from coord.targets import Target
from coord.targets.config import LOCAL_TARGET


class Progress(Protocol):
    """Where the runner reports progress on long work (the CLI draws it; tests pass nothing)."""

    def begin(self, volume: str) -> None: ...
    def update(self, entries: int, written_bytes: int) -> None: ...
    def end(self) -> None: ...


@dataclass(frozen=True)
class BackupRequest:
    policies_dir: Path
    dest: Path | None  # --dest / COORD_DEST: the local target `local` (also in `targets` when the CLI resolved them)
    policy_names: Sequence[str] = ()
    state_dir: Path = DEFAULT_STATE_DIR
    lock_timeout_s: float = 0.0
    sources: VolumeSources = HOST
    passphrase_file: Path | None = None  # symmetric encryption for policies without `encrypt:`
    targets: tuple[Target, ...] = ()  # the run's targets (targets.resolve_targets); none given: `dest` alone

    def run_targets(self) -> list[Target]:
        """Where this run's archives go. Raises UsageError when there is nowhere."""
        if self.targets:
            return list(self.targets)
        if self.dest is None:
            raise UsageError("no destination: pass --dest DIR, set COORD_DEST, or define targets in _defaults.yaml")
        return [Target(LOCAL_TARGET, local_path=self.dest)]


@dataclass
class RunContext:
    """Everything a step needs besides its job: the request, the engine, the journal, where progress goes, what
    was done to containers in this group's window (`actions`), the steps executed so far (`steps`, in order:
    the record a test compares with `coord plan`), and the run's targets."""

    request: BackupRequest
    docker: Engine
    journal: Journal
    progress: Progress | None = None
    actions: list[ContainerAction] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)  # the run's (request.run_targets())
    capabilities: dict[str, Capabilities] = field(default_factory=dict)  # by target: asked once a run

    def for_group(self) -> RunContext:
        """The context of one quiesce group: its own container actions, the run's step record."""
        return replace(self, actions=[])

    def record(self, step: Step) -> None:
        self.steps.append(step)
