"""Settings for every run, from `<policies dir>/_defaults.yaml` (optional): notifications and named targets.

The file sits beside the policies so one directory configures coord, but it is not a policy (the loader skips
it). It is validated like a policy file: unknown keys, duplicate keys and wrong types are errors with file,
line and key. A missing or empty file means the defaults: no notifications.

```yaml
notify:
  webhooks:
    - url: https://hooks.example.com/services/T000/B000/XXXX
      events: [failure, success]      # default [failure]; also start
      timeout_s: 10
  log_lines: 50                       # the run's last log lines sent along
targets:                              # where archives go (targets/config.py); a policy may pick some
  local:   {path: /backups}
  offsite: {rclone: "offsite:coord-backups"}
```
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from coord.errors import PolicyError
from coord.notify import Notify
from coord.policy import DEFAULTS_STEM, POLICY_SUFFIXES, parse_document, read_policy_text
from coord.targets.config import TargetConfig, check_target_name


class Defaults(BaseModel):
    """Settings that apply to every backup run, whatever the policy."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="coord defaults")

    notify: Notify = Field(default_factory=Notify, description="Webhooks called when a run starts, fails or succeeds.")
    targets: dict[str, TargetConfig] = Field(
        default_factory=dict,
        description=(
            "Where archives go, each under a name (letters, digits, '_', '.', '-'): `path:` a local directory, or "
            "`rclone:` an rclone remote:path from rclone's own configuration. Every backup writes to every target "
            "unless the policy names some (`targets:`) or the command line picks some (--target NAME). "
            "--dest DIR (COORD_DEST) is a local target named `local`."
        ),
        examples=[{"local": {"path": "/backups"}, "offsite": {"rclone": "offsite:coord-backups"}}],
    )

    @field_validator("targets")
    @classmethod
    def _names(cls, value: dict[str, object]) -> dict[str, object]:
        for name in value:
            check_target_name(name)
        return value


def defaults_path(directory: Path) -> Path | None:
    """The defaults file in `directory` (`_defaults.yaml` or `.yml`), None when there is none."""
    found = [directory / f"{DEFAULTS_STEM}{suffix}" for suffix in POLICY_SUFFIXES]
    present = [path for path in found if path.is_file()]
    if len(present) > 1:
        raise PolicyError([f"{present[1]}: defaults are also defined by {present[0]}; keep one file"])
    return present[0] if present else None


def load_defaults(directory: Path) -> Defaults:
    """Read and validate the defaults file; `Defaults()` without one. Raises PolicyError listing every problem."""
    path = defaults_path(directory)
    if path is None:
        return Defaults()
    text, problems = read_policy_text(path)
    defaults = None
    if text is not None:
        defaults, problems = parse_document(path, text, Defaults, "notify, targets")
    if problems or defaults is None:
        raise PolicyError(problems)
    return defaults


def render_defaults_schema() -> str:
    """The JSON Schema of the defaults file (`coord schema --defaults`), for editors."""
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **Defaults.model_json_schema()}
    return json.dumps(schema, indent=2) + "\n"
