"""The `targets:` of `<policies dir>/_defaults.yaml`: where archives go, each target named.

```yaml
targets:
  local:   {path: /backups}                       # a directory on this host
  offsite: {rclone: "offsite:coord-backups"}      # an rclone remote:path, from rclone's own configuration
```

A target is one of the kinds below, chosen by the key it gives (`path:`, `rclone:` or `restic:`); giving none
or several is an error that says which to give. (One model with a key per kind, not a pydantic union: errors
then name the key as written, `targets.offsite.rclone`, with its line.)

Credentials never appear here: an rclone remote's come from rclone's own
configuration (RCLONE_CONFIG, --rclone-config FILE, or RCLONE_CONFIG_<REMOTE>_<KEY> environment variables).
A restic repository (`restic:`, with its `password_file`) is the third kind: ResticTargetConfig.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from coord.policy import LoadedPolicy, location_in

TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # refs are `<target>:<volume>/<file>`: no ':' or '/'
LOCAL_TARGET = "local"  # the target --dest DIR / COORD_DEST stands for


@dataclass(frozen=True)
class LocalTargetConfig:
    """A directory on this host: archives land in `<path>/<volume>/`."""

    path: Path


@dataclass(frozen=True)
class RcloneTargetConfig:
    """Any storage rclone reaches, as an rclone `remote:path` whose remote is in rclone's own configuration."""

    rclone: str


@dataclass(frozen=True)
class ResticTargetConfig:
    """A restic repository (any URL restic takes: a directory, `sftp:`, `s3:`, `rest:`, `rclone:`): one
    deduplicated snapshot per volume and run (targets/restic.py). Its password is read from `password_file`, or
    from restic's own RESTIC_PASSWORD_FILE / RESTIC_PASSWORD when that is None."""

    restic: str
    password_file: Path | None = None


class TargetConfig(BaseModel):
    """One target: a local directory (`path:`) or an rclone remote:path (`rclone:`), exactly one."""

    # resolved() gives the kind's own settings (LocalTargetConfig, RcloneTargetConfig).

    model_config = ConfigDict(extra="forbid", frozen=True, title="target")

    path: Path | None = Field(
        default=None,
        description="A local target: the absolute directory archives are written to (one sub-directory per volume).",
        examples=["/backups"],
    )
    rclone: str | None = Field(
        default=None,
        description=(
            "An rclone target: `remote:bucket/dir` with `remote` defined in rclone's configuration (RCLONE_CONFIG, "
            "--rclone-config FILE, or RCLONE_CONFIG_<REMOTE>_TYPE and friends). Archives land in "
            "`<path>/<volume>/`. Credentials belong in rclone's configuration, never here."
        ),
        examples=["offsite:coord-backups", "b2:my-bucket/coord"],
    )

    restic: str | None = Field(
        default=None,
        description=(
            "A restic target: a restic repository URL (`/srv/restic`, `sftp:user@host:/srv/coord`, `s3:...`, "
            "`rest:http://host:8000/`, `rclone:remote:path`). Deduplicated: a nightly backup stores only what changed. "
            "Create it once with `coord init-target NAME`."
        ),
        examples=["sftp:backup@host:/srv/coord", "rest:http://127.0.0.1:8000/coord"],
    )
    password_file: Path | None = Field(
        default=None,
        description=(
            "restic targets only: the file holding the repository's password (default: restic's own "
            "RESTIC_PASSWORD_FILE or RESTIC_PASSWORD). Never printed."
        ),
        examples=["/run/secrets/restic"],
    )

    @field_validator("path", "password_file")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError(f"'{value}' is relative; give an absolute directory (coord may run from anywhere)")
        return value

    @field_validator("rclone")
    @classmethod
    def _remote_path(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value:
            raise ValueError("must not be empty: give `remote:path`")
        if "://" in value or "@" in value.split("/", 1)[0]:
            raise ValueError(
                "looks like a URL or carries a user; name an rclone remote (`remote:path`) and keep its "
                "credentials in rclone's configuration"
            )
        if value.strip() != value:
            raise ValueError("must not start or end with white space")
        return value if value.endswith(":") else value.rstrip("/")

    @field_validator("restic")
    @classmethod
    def _repository(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value or value.strip() != value:
            raise ValueError("give a restic repository URL, without surrounding white space")
        if re.search(r"://[^/@]*:[^/@]*@", value):
            raise ValueError("carries a password; keep it in the password_file (or the repository's own configuration)")
        return value

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> TargetConfig:
        given = [key for key in ("path", "rclone", "restic") if getattr(self, key) is not None]
        if len(given) != 1:
            got = {0: "neither", 2: "both"}.get(len(given), "all three")
            raise ValueError(
                "give `path:` (a local directory), `rclone:` (remote:path) or `restic:` (a restic repository URL), "
                f"got {got}"
            )
        if self.password_file is not None and self.restic is None:
            raise ValueError("password_file: only a restic target (`restic:`) has a password")
        return self

    def resolved(self) -> LocalTargetConfig | RcloneTargetConfig | ResticTargetConfig:
        if self.path is not None:
            return LocalTargetConfig(self.path)
        if self.restic is not None:
            return ResticTargetConfig(self.restic, self.password_file)
        assert self.rclone is not None  # _exactly_one_kind
        return RcloneTargetConfig(self.rclone)


def check_target_name(name: str) -> str:
    """A target name as refs and `--target` use it; raises ValueError saying what is allowed."""
    if not TARGET_NAME.match(name):
        raise ValueError(
            f"target name '{name}': use letters, digits, '_', '.', '-' (it starts a ref `<target>:<volume>/<file>`)"
        )
    return name



def unknown_target_problems(policies: Sequence[LoadedPolicy], known: Iterable[str]) -> list[str]:
    """`file:line: targets[i]: ...` for every target a policy names that is not one of `known` (the targets of
    _defaults.yaml, plus `local` when --dest is given), with the closest known name as a hint."""
    names = sorted(known)
    problems = []
    for item in policies:
        for index, name in enumerate(item.policy.targets or ()):
            if name in names:
                continue
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            defined = f"the targets are {', '.join(names)}" if names else "no target is defined"
            problems.append(
                f"{location_in(item.path, ('targets', index))}: targets[{index}]: no target named '{name}'{hint}; "
                f"{defined} (_defaults.yaml `targets:`, or `local` for --dest)"
            )
    return problems
