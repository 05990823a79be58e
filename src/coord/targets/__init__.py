"""Where archives go: the run's targets, resolved from `_defaults.yaml` `targets:`, --dest/COORD_DEST (a local
target named `local`) and --target NAME; and a volume's targets, from its policy's `targets:`.

On every target the layout is the same as --dest's: `<target root>/<volume>/<archive file>` with
`<archive file>.manifest.json` beside it. A ref names one archive: `<target>:<volume>/<archive file>`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from coord.errors import PolicyError, UsageError
from coord.policy import LoadedPolicy, Policy
from coord.targets.config import (
    LOCAL_TARGET,
    LocalTargetConfig,
    RcloneTargetConfig,
    ResticTargetConfig,
    TargetConfig,
    unknown_target_problems,
)
from coord.targets.rclone import Rclone

if TYPE_CHECKING:
    from coord.targets.restic import Restic

PARTIAL_SUFFIX = ".partial"  # a temporary name on any target: never listed, never an archive


@dataclass(frozen=True)
class Target:
    """One named target of a run: a local directory (`local_path`), an rclone path (`rclone_path`) or a restic
    repository (`restic`)."""

    name: str
    local_path: Path | None = None
    rclone_path: str | None = None
    rclone_config: Path | None = None  # --rclone-config FILE; None: rclone's own (RCLONE_CONFIG, env vars)
    restic: ResticTargetConfig | None = None

    @classmethod
    def of(cls, name: str, config: TargetConfig, rclone_config: Path | None = None) -> Target:
        resolved = config.resolved()
        if isinstance(resolved, LocalTargetConfig):
            return cls(name, local_path=resolved.path)
        if isinstance(resolved, ResticTargetConfig):
            return cls(name, restic=resolved, rclone_config=rclone_config)
        return cls(name, rclone_path=resolved.rclone, rclone_config=rclone_config)

    @property
    def is_local(self) -> bool:
        return self.local_path is not None

    @property
    def is_restic(self) -> bool:
        return self.restic is not None

    @property
    def config(self) -> LocalTargetConfig | RcloneTargetConfig | ResticTargetConfig:
        if self.local_path is not None:
            return LocalTargetConfig(self.local_path)
        if self.restic is not None:
            return self.restic
        assert self.rclone_path is not None
        return RcloneTargetConfig(self.rclone_path)

    def repository(self) -> Restic:
        """The restic repository of a restic target (targets/restic.py)."""
        from coord.targets.restic import Restic

        assert self.restic is not None
        return Restic(self.name, self.restic.restic, self.restic.password_file, self.rclone_config)

    def rclone(self) -> Rclone:
        """The transport for this target (a local one too: rclone takes a plain path)."""
        return Rclone(self.name, self.rclone_config)

    def location(self, *parts: str) -> str:
        """The rclone path of `parts` under the target's root (`remote:base/volume/file`, or a local path)."""
        if self.local_path is not None:
            return str(self.local_path.joinpath(*parts))
        assert self.rclone_path is not None
        joined = "/".join(parts)
        if not joined:
            return self.rclone_path
        return self.rclone_path + ("" if self.rclone_path.endswith((":", "/")) else "/") + joined

    def ref(self, volume: str, file_name: str) -> str:
        return format_ref(self.name, volume, file_name)

    def describe(self) -> str:
        """The target in words for `coord plan` and logs (no credentials: a target holds none)."""
        if self.restic is not None:
            return f"{self.name} (restic {self.restic.restic})"
        where = str(self.local_path) if self.local_path is not None else f"rclone {self.rclone_path}"
        return f"{self.name} ({where})"


def format_ref(target: str, volume: str, file_name: str) -> str:
    """`<target>:<volume>/<file>`: one archive on one target, as `coord list` prints it."""
    return f"{target}:{volume}/{file_name}"


def resolve_targets(
    defined: dict[str, TargetConfig],
    dest: Path | None,
    selected: Sequence[str] = (),
    rclone_config: Path | None = None,
) -> list[Target]:
    """The run's targets: those of _defaults.yaml (`defined`), plus --dest as `local`, limited to `selected`
    (--target NAME, repeatable) when given.

    Raises UsageError when there is no target at all, --dest disagrees with a `local` of _defaults.yaml, or a
    selected name is not a target.
    """
    targets = {name: Target.of(name, config, rclone_config) for name, config in defined.items()}
    if dest is not None:
        given = Target(LOCAL_TARGET, local_path=dest)
        existing = targets.get(LOCAL_TARGET)
        if existing is not None and existing.local_path != dest.absolute() and existing.local_path != dest:
            raise UsageError(
                f"--dest {dest} (COORD_DEST) and the target `{LOCAL_TARGET}` of _defaults.yaml "
                f"({existing.describe()}) disagree: --dest means the target `{LOCAL_TARGET}`; drop one of them"
            )
        targets[LOCAL_TARGET] = given
    if not targets:
        raise UsageError("no destination: pass --dest DIR, set COORD_DEST, or define targets in _defaults.yaml")
    unknown = [name for name in dict.fromkeys(selected) if name not in targets]
    if unknown:
        raise UsageError(unknown_target_message(unknown, targets))
    if selected:
        return [targets[name] for name in dict.fromkeys(selected)]
    return list(targets.values())


def unknown_target_message(unknown: Iterable[str], targets: Iterable[str]) -> str:
    names = sorted(targets)
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, names, n=1)
        parts.append(f"'{name}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    return f"--target: no target named {', '.join(parts)}; the targets are {', '.join(names) or 'none'}"


def check_policy_targets(policies: Sequence[LoadedPolicy], defined: Iterable[str], dest: Path | None) -> None:
    """Raise PolicyError (file:line, did you mean) when a policy names a target that is not defined."""
    known = {*defined, *([LOCAL_TARGET] if dest is not None else [])}
    problems = unknown_target_problems(policies, known)
    if problems:
        raise PolicyError(problems)


def targets_of(policy: Policy, run_targets: Sequence[Target]) -> list[Target]:
    """The run's targets this policy's archives go to: all of them, or those its `targets:` names (a name the
    command line left out with --target is skipped)."""
    if policy.targets is None:
        return list(run_targets)
    return [target for target in run_targets if target.name in policy.targets]
