"""Where archives go: the run's targets, resolved from `_defaults.yaml` `targets:`, --dest/COORD_DEST (a local
target named `local`) and --target NAME; and a volume's targets, from its policy's `targets:`.

On every target the layout is the same as --dest's: `<target root>/<volume>/<archive file>` with
`<archive file>.manifest.json` beside it; on a Swarm node, `<target root>/_nodes/<node>/<volume>/<archive file>`
(`Target.node`): nodes share targets and name their volumes alike, so each node has its own namespace. A ref names
one archive: `<target>:<volume>/<archive file>`, or `<target>:<node>/<volume>/<archive file>` for a node's.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from coord.errors import PolicyError, UsageError
from coord.node import NODES_DIRECTORY
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
    repository (`restic`). `node`: the Swarm node whose namespace the run writes (`_nodes/<node>/` under the
    root; a restic snapshot's host), None outside a swarm (the flat layout)."""

    name: str
    local_path: Path | None = None
    rclone_path: str | None = None
    rclone_config: Path | None = None  # --rclone-config FILE; None: rclone's own (RCLONE_CONFIG, env vars)
    restic: ResticTargetConfig | None = None
    node: str | None = None

    def for_node(self, node: str | None) -> Target:
        """This target with archives written in `node`'s namespace (None: the flat layout)."""
        return dataclasses.replace(self, node=node)

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
        from coord.targets.restic import FLAT_HOST

        host = self.node or FLAT_HOST
        return Restic(self.name, self.restic.restic, self.restic.password_file, self.rclone_config, host)

    def volume_parts(self, volume: str) -> tuple[str, ...]:
        """The path of `volume`'s directory under the target's root: `_nodes/<node>/<volume>` or `<volume>`."""
        return volume_parts(volume, self.node)

    def volume_location(self, volume: str, *names: str) -> str:
        """The rclone path (or local path) of `names` in `volume`'s directory on this target."""
        return self.location(*self.volume_parts(volume), *names)

    def volume_directory(self, volume: str) -> Path:
        """A local target's directory of `volume` (`<root>/<volume>` or `<root>/_nodes/<node>/<volume>`)."""
        assert self.local_path is not None
        return self.local_path.joinpath(*self.volume_parts(volume))

    @property
    def archive_root(self) -> Path | None:
        """A local target's directory holding this node's volume directories (None for a remote one)."""
        if self.local_path is None:
            return None
        return self.local_path / NODES_DIRECTORY / self.node if self.node else self.local_path

    def where(self, volume: str) -> str:
        """Where `volume`'s archives go on this target, for `coord plan` (`offsite:node1/pg_data/`)."""
        return f"{self.name}:{self.node}/{volume}/" if self.node else f"{self.name}:{volume}/"

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
        return format_ref(self.name, volume, file_name, self.node)

    def describe(self) -> str:
        """The target in words for `coord plan` and logs (no credentials: a target holds none)."""
        if self.restic is not None:
            return f"{self.name} (restic {self.restic.restic})"
        where = str(self.local_path) if self.local_path is not None else f"rclone {self.rclone_path}"
        return f"{self.name} ({where})"


def format_ref(target: str, volume: str, file_name: str, node: str | None = None) -> str:
    """`<target>:<volume>/<file>`, or `<target>:<node>/<volume>/<file>` for a Swarm node's archive: one archive
    on one target, as `coord list` prints it."""
    return f"{target}:{node}/{volume}/{file_name}" if node else f"{target}:{volume}/{file_name}"


def volume_parts(volume: str, node: str | None) -> tuple[str, ...]:
    """The path of `volume`'s directory under a target's root: `_nodes/<node>/<volume>` for a Swarm node's
    archives, `<volume>` in the flat layout."""
    return (NODES_DIRECTORY, node, volume) if node else (volume,)


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
