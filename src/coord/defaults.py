"""Settings for every run, from `<policies dir>/_defaults.yaml` (optional): notifications, dead-man pings, metrics,
named targets.

The file sits beside the policies so one directory configures coord, but it is not a policy (the loader skips
it). It is validated like a policy file: unknown keys, duplicate keys and wrong types are errors with file,
line and key. A missing or empty file means the defaults: no notifications, no pings, no metrics file.

```yaml
notify:
  urls: [ntfy://ntfy.example.com/backups]   # Apprise URLs; a plain http(s):// URL is coord's JSON webhook
  on: [failure, warning]                    # the default; also success
  webhooks:
    - url: https://hooks.example.com/services/T000/B000/XXXX
      events: [failure, success]      # default [failure]; also start
      timeout_s: 10
  log_lines: 50                       # the run's last log lines sent along (JSON webhooks)
ping:
  healthchecks: [https://hc-ping.com/<uuid>]       # <url>/start, then <url> or <url>/fail
  uptime_kuma: [https://kuma.example.com/api/push/<token>]
metrics:
  file: /var/lib/node_exporter/textfile/coord.prom  # written after each run
targets:                              # where archives go (targets/config.py); a policy may pick some
  local:   {path: /backups}
  offsite: {rclone: "offsite:coord-backups"}
run_records:
  keep_days: 90                       # `coord prune` deletes older run records (run_records.py)
```
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from coord.errors import PolicyError
from coord.notify import Notify
from coord.pings import Pings
from coord.policy import DEFAULTS_STEM, POLICY_SUFFIXES, parse_document, read_policy_text
from coord.targets.config import TargetConfig, check_target_name


class MetricsSettings(BaseModel):
    """Prometheus metrics written after each run (docs/monitoring.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="metrics")

    file: Path | None = Field(
        default=None,
        description=(
            "Textfile-collector file to write after each run (node_exporter's --collector.textfile.directory, "
            "name ending in .prom); replaced atomically. Relative to this file's directory. `--metrics-file` "
            "overrides it."
        ),
        examples=["/var/lib/node_exporter/textfile/coord.prom"],
    )


RUN_RECORDS_KEEP_DAYS = 90


class RunRecordSettings(BaseModel):
    """The run records every backup publishes to its targets (`_runs/`, run_records.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="run_records")

    keep_days: int = Field(
        default=RUN_RECORDS_KEEP_DAYS,
        ge=1,
        description=(
            "`coord prune` deletes run records (`<target>/_runs/<node>/`) of runs that started more than this "
            "many days ago: the fleet report's history (docs/swarm.md). A node silent for longer is no longer "
            "shown as silent."
        ),
        examples=[90, 400],
    )


class Defaults(BaseModel):
    """Settings that apply to every backup run, whatever the policy."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="coord defaults")

    notify: Notify = Field(
        default_factory=Notify,
        description="Notifications about the whole run: Apprise URLs and JSON webhooks (policies can add their own).",
    )
    ping: Pings = Field(
        default_factory=Pings,
        description="Dead-man pings for the whole run: Healthchecks and Uptime Kuma push URLs.",
    )
    metrics: MetricsSettings = Field(default_factory=MetricsSettings, description="Prometheus metrics.")
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

    run_records: RunRecordSettings = Field(
        default_factory=RunRecordSettings,
        description="Run records on the targets (one per backup run, read by `coord report --fleet`): how long kept.",
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
        defaults, problems = parse_document(path, text, Defaults, "notify, ping, metrics, targets, run_records")
    if problems or defaults is None:
        raise PolicyError(problems)
    metrics_file = defaults.metrics.file
    if metrics_file is not None and not metrics_file.is_absolute():
        absolute = path.parent.absolute() / metrics_file
        defaults = defaults.model_copy(update={"metrics": MetricsSettings(file=absolute)})
    return defaults


def render_defaults_schema() -> str:
    """The JSON Schema of the defaults file (`coord schema --defaults`), for editors."""
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **Defaults.model_json_schema()}
    return json.dumps(schema, indent=2) + "\n"
