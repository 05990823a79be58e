"""Policy files: the model, loading from a directory, and validation errors that name file, line and key.

A policy is one YAML file in the policies directory; its name is the file name without `.yaml`/`.yml`.
The model below is the single source of truth: validation, defaults and `coord schema` all come from it.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from coord.errors import PolicyError, UsageError
from coord.notify import PolicyNotify
from coord.pings import Pings

DocumentModel = TypeVar("DocumentModel", bound=BaseModel)

POLICY_SUFFIXES = (".yaml", ".yml")
DEFAULTS_STEM = "_defaults"  # <policies dir>/_defaults.yaml holds settings for every run, not a policy (defaults.py)


class Strategy(StrEnum):
    """How the containers using a volume are treated while it is archived."""

    LIVE = "live"
    PAUSE = "pause"
    STOP = "stop"
    EXCLUDE = "exclude"
    SNAPSHOT = "snapshot"
    AUTO = "auto"


class Escalation(StrEnum):
    """What `auto` falls back to when a live read is not good enough."""

    SNAPSHOT = "snapshot"
    PAUSE = "pause"
    STOP = "stop"


class Compression(StrEnum):
    ZSTD = "zstd"
    GZIP = "gzip"
    NONE = "none"  # a plain .tar: what a restic target gets (restic compresses and deduplicates the tar stream)


class OnAtRisk(StrEnum):
    WARN = "warn"
    FAIL = "fail"


class ConsistencyRule(StrEnum):
    """How the verdict judges a directory that lost and gained entries while it was read."""

    GENERIC = "generic"
    CLICKHOUSE = "clickhouse"


GLOB_CHARACTERS = set("*?[")


def is_glob(pattern: str) -> bool:
    """True when `pattern` uses glob syntax rather than naming one thing exactly."""
    return any(character in GLOB_CHARACTERS for character in pattern)


def check_volume_pattern(pattern: str) -> str:
    if not pattern.strip():
        raise ValueError("a volume pattern must not be empty")
    if "/" in pattern:
        raise ValueError(f"'{pattern}' contains '/': volume names never do (give the name, not a path)")
    return pattern


def check_exclude_pattern(pattern: str) -> str:
    body = pattern.removeprefix("/").rstrip("/")
    if not body.strip():
        raise ValueError("an exclude pattern must not be empty")
    if pattern.startswith("//"):
        raise ValueError(f"'{pattern}': start with a single '/' to anchor the pattern at the volume root")
    parts = body.split("/")
    if ".." in parts or "." in parts or "" in parts:
        raise ValueError(
            f"'{pattern}' contains '.', '..' or empty components: patterns are relative to the volume root"
        )
    if "**" in pattern:
        raise ValueError(
            f"'{pattern}': '**' is not supported. '*' matches within one directory level; "
            "a pattern without '/' matches that name at any depth"
        )
    if "\\" in pattern:
        raise ValueError(f"'{pattern}': backslashes are not supported; match a literal '*' with '[*]'")
    return pattern


VolumePattern = Annotated[
    str, AfterValidator(check_volume_pattern), Field(examples=["posthog_clickhouse-data", "*clickhouse*"])
]
ExcludePattern = Annotated[
    str, AfterValidator(check_exclude_pattern), Field(examples=["store/*/*/tmp_*", "/preprocessed_configs"])
]


class OnHookError(StrEnum):
    FAIL = "fail"
    CONTINUE = "continue"


class Hook(BaseModel):
    """A command run inside a container with `docker exec` around the archiving step."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    container: str = Field(
        min_length=1,
        description="Container to exec in: a container name, a compose service, or project/service.",
        examples=["posthog-clickhouse-1", "clickhouse"],
    )
    exec: list[str] = Field(
        min_length=1,
        description="The command and its arguments (no shell: write [sh, -c, '...'] for one).",
        examples=[["clickhouse-client", "--query", "SYSTEM STOP MERGES"]],
    )
    timeout_s: int = Field(
        default=60, ge=1, le=3600, description="Seconds before the hook counts as failed.", examples=[60]
    )


class Hooks(BaseModel):
    """Commands run in containers before and after the archiving step."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    before: list[Hook] = Field(
        default_factory=list,
        description=(
            "Run in order before the containers are paused or stopped (exec cannot run in a paused container). "
            "A failing hook fails the volume without archiving, unless on_error is continue."
        ),
        examples=[[{"container": "clickhouse", "exec": ["clickhouse-client", "-q", "SYSTEM STOP MERGES"]}]],
    )
    after: list[Hook] = Field(
        default_factory=list,
        description=(
            "Run in order after the containers are back (unpaused or started), whenever the before hooks ran, "
            "also when archiving failed."
        ),
        examples=[[{"container": "clickhouse", "exec": ["clickhouse-client", "-q", "SYSTEM START MERGES"]}]],
    )
    on_error: OnHookError = Field(
        default=OnHookError.FAIL,
        description="fail: a failing before hook fails the volume (nothing archived); continue: log it and archive.",
        examples=["fail"],
    )


class EncryptSettings(BaseModel):
    """How this policy's archives are encrypted with GnuPG: to public keys, or with a passphrase (exactly one)."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="encrypt")

    recipient_key_file: Path | None = Field(
        default=None,
        description=(
            "ASCII-armored OpenPGP public key(s) to encrypt to (every key in the file is a recipient). Imported "
            "into a GnuPG home coord keeps under its state directory; only the matching secret key decrypts. "
            "A relative path is relative to this policy file's directory."
        ),
        examples=["keys/backup-recipients.asc", "/etc/coord/offsite.pub.asc"],
    )
    passphrase_file: Path | None = Field(
        default=None,
        description=(
            "File whose first line is the passphrase (symmetric AES256). Keep it mode 0600, outside the backup "
            "destination. A relative path is relative to this policy file's directory."
        ),
        examples=["/etc/coord/passphrase"],
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> EncryptSettings:
        given = [name for name in ("recipient_key_file", "passphrase_file") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of recipient_key_file (public-key encryption) or passphrase_file (symmetric), "
                f"got {' and '.join(given) if given else 'neither'}"
            )
        return self


class RetentionSettings(BaseModel):
    """Which archives of a volume to keep. An archive is kept when either rule keeps it."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="retention")

    keep_last: int | None = Field(
        default=None,
        ge=1,
        strict=True,
        description="Keep the newest N archives of each volume.",
        examples=[7],
    )
    keep_days: int | None = Field(
        default=None,
        ge=0,
        strict=True,
        description=(
            "Keep every archive started less than D days ago. 0 keeps none by age (keep_last still applies). "
            "The newest archive that was verified when written is never deleted, whatever the rules say."
        ),
        examples=[30],
    )
    keep_daily: int | None = Field(
        default=None,
        ge=1,
        strict=True,
        description="Keep the newest verified archive of each of the last N days that have one (UTC days).",
        examples=[7],
    )
    keep_weekly: int | None = Field(
        default=None,
        ge=1,
        strict=True,
        description="Keep the newest verified archive of each of the last N ISO weeks that have one.",
        examples=[4],
    )
    keep_monthly: int | None = Field(
        default=None,
        ge=1,
        strict=True,
        description="Keep the newest verified archive of each of the last N months that have one.",
        examples=[12],
    )

    @model_validator(mode="after")
    def _at_least_one(self) -> RetentionSettings:
        rules = (self.keep_last, self.keep_days, self.keep_daily, self.keep_weekly, self.keep_monthly)
        if all(rule is None for rule in rules):
            raise ValueError(
                "give keep_last, keep_days, keep_daily, keep_weekly or keep_monthly (any together); an empty "
                "retention would delete nothing or all"
            )
        return self


class RestoreSettings(BaseModel):
    """What `coord restore` may create in this policy's volumes beyond files, directories and links."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="restore")

    allow_devices: bool = Field(
        default=False,
        description="Let a restore create character and block device nodes (refused by default).",
        examples=[False],
    )
    allow_fifos: bool = Field(
        default=False,
        description="Let a restore create FIFOs (named pipes; refused by default).",
        examples=[False],
    )


class AnomalySettings(BaseModel):
    """When an archive that holds much less than the volume's last successful one is worth a warning."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="anomaly")

    max_drop: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description=(
            "The largest fall, as a fraction, of the archive's size or entry count from the last successful archive "
            "of the same volume (in the history) that is still normal; a larger fall makes the volume 'warning' "
            "with both figures. 0.5 (default) = 50%; 1 turns the check off."
        ),
        examples=[0.5, 0.9],
    )


class Policy(BaseModel):
    """One workload's backup policy: which Docker volumes, and how to keep them consistent while archived."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        use_enum_values=False,
        title="coord policy",
    )

    description: str | None = Field(
        default=None,
        description="Free text for people: what this workload is and why it uses this strategy.",
        examples=["PostHog's ClickHouse: immutable parts, merges deleted in the background."],
    )
    volumes: list[VolumePattern] = Field(
        min_length=1,
        description=(
            "Docker named volumes this policy backs up: exact names, or shell globs (*, ?, [abc]) matched "
            "against the names `docker volume ls` shows. An exact name that does not exist fails the run; "
            "a glob that matches nothing fails it too, so a renamed stack cannot silently stop being backed up."
        ),
        examples=[["posthog_clickhouse-data"], ["*clickhouse*"]],
    )
    strategy: Strategy = Field(
        description=(
            "live: archive while the containers run; vanished/changed files are warnings, real read errors fail. "
            "pause: `docker pause` the containers using the volume while it is archived. "
            "stop: stop them, archive, start them again. exclude: do not back the volume up. "
            "snapshot: hard-link the tree while the containers run, pause them only to bring the links up to "
            "date (each name then holds the inode it had at the pause; where the file system can clone, every file "
            "is cloned instead, during the pause), unpause, archive the snapshot: for stores whose files are "
            "immutable once written (ClickHouse, Kafka), not for Postgres (a file written in place after the "
            "unpause is detected and makes the verdict at-risk). auto: try live; if the "
            "verdict is at-risk or more than max_vanished entries vanished, retry once with escalate_to."
        ),
        examples=["live", "pause", "snapshot"],
    )
    exclude: list[ExcludePattern] = Field(
        default_factory=list,
        description=(
            "Paths inside the volume left out of the archive, relative to the volume root. '*', '?' and '[...]' "
            "never match '/'. A pattern containing '/' is anchored at the volume root and matches whole leading "
            "components (store/*/*/tmp_* excludes store/263/<uuid>/tmp_merge_x and everything below it); a leading "
            "'/' anchors a single name (/tmp is the root's tmp only). A pattern without '/' matches an entry of that "
            "name at any depth. An excluded directory excludes its subtree."
        ),
        examples=[["store/*/*/tmp_*", "/shadow", "/tmp"]],
    )
    compression: Compression = Field(
        default=Compression.ZSTD,
        description=(
            "Archive compression: zstd (.tar.zst, default, multi-threaded), gzip (.tar.gz) or none (.tar). A volume "
            "sent to a restic target is always sent uncompressed (restic compresses after deduplicating)."
        ),
        examples=["zstd"],
    )
    on_at_risk: OnAtRisk = Field(
        default=OnAtRisk.WARN,
        description=(
            "What an `at-risk` verdict does (a directory lost entries and gained new ones while it was read, so "
            "data may be missing from the archive): warn = status warning, the archive is kept; fail = the "
            "volume fails and no archive is kept."
        ),
        examples=["warn", "fail"],
    )
    consistency: ConsistencyRule = Field(
        default=ConsistencyRule.GENERIC,
        description=(
            "How the verdict judges a directory that lost and gained entries while it was read. generic (default): "
            "at-risk, since data may be in neither copy. clickhouse: in MergeTree table directories (those with a "
            "format_version.txt), judge by part names instead: a part that went missing during the read is harmless "
            "when a part in the archive contains its block range, and at-risk when only a part that is not in the "
            "archive does (its rows are missing from the archive); other directories keep the generic rule."
        ),
        examples=["clickhouse"],
    )
    escalate_to: Escalation = Field(
        default=Escalation.PAUSE,
        description="strategy auto: the strategy of the second attempt when the live read is not good enough.",
        examples=["snapshot"],
    )
    max_vanished: int | None = Field(
        default=None,
        ge=0,
        description=(
            "strategy auto: escalate when more entries than this vanished during the live read (no limit when "
            "unset; an at-risk verdict always escalates)."
        ),
        examples=[100],
    )
    compression_level: int | None = Field(
        default=None,
        ge=1,
        le=19,
        description="Compression level: zstd 1-19 (default 3), gzip 1-9 (default 6).",
        examples=[3],
    )
    compression_threads: int = Field(
        default=0,
        ge=0,
        le=256,
        description=(
            "Compressor threads (pzstd; pigz for gzip; zstd -T where pzstd is missing); 0 (default) uses every core."
        ),
        examples=[0],
    )
    containers: list[str] = Field(
        default_factory=list,
        description=(
            "More containers to pause or stop with the ones that mount the volume, e.g. an app that writes "
            "through the database: container names, compose services, or project/service."
        ),
        examples=[["posthog-worker-1", "plugins"]],
    )
    stop_timeout: int = Field(
        default=30,
        ge=0,
        le=3600,
        description="strategy stop: seconds a container gets to shut down cleanly before it is killed.",
        examples=[30],
    )
    stop_order: list[str] = Field(
        default_factory=list,
        description=(
            "strategies pause and stop: containers (names or services) to pause/stop first, in this order; the "
            "others follow in name order. They come back in the reverse order, so list writers before the database."
        ),
        examples=[["worker", "web"]],
    )
    max_downtime_s: float = Field(
        default=60,
        ge=0,
        description=(
            "strategies pause, stop, snapshot and auto: the longest time a container may stay paused or stopped. "
            "A longer downtime (a slow or hung engine, a slow archive) does not fail the volume but makes it "
            "'warning', with the figure in its errors."
        ),
        examples=[60, 5],
    )
    hooks: Hooks = Field(
        default_factory=Hooks,
        description="Commands run with docker exec before and after the archiving step.",
        examples=[{"before": [{"container": "clickhouse", "exec": ["clickhouse-client", "-q", "SYSTEM STOP MERGES"]}]}],
    )

    @model_validator(mode="after")
    def _level_fits_compression(self) -> Policy:
        if self.compression is Compression.GZIP and self.compression_level is not None and self.compression_level > 9:
            raise ValueError(f"compression_level: gzip accepts 1-9, got {self.compression_level}")
        return self

    encrypt: EncryptSettings | None = Field(
        default=None,
        description=(
            "Encrypt the archives with GnuPG, streamed (no plaintext archive on disk): give recipient_key_file or "
            "passphrase_file. Archives are named <volume>-<time>.tar.zst.gpg. Without this key, the "
            "--passphrase-file option (env COORD_PASSPHRASE_FILE) of `coord backup`, when given, applies."
        ),
        examples=[{"recipient_key_file": "keys/offsite.pub.asc"}, {"passphrase_file": "/etc/coord/passphrase"}],
    )
    retention: RetentionSettings | None = Field(
        default=None,
        description=(
            "Delete old archives of each volume after a successful backup of it (and on `coord prune`). "
            "Without this key nothing is ever deleted."
        ),
        examples=[{"keep_last": 7, "keep_days": 30}],
    )
    restore: RestoreSettings = Field(
        default_factory=RestoreSettings,
        description="What a restore into this policy's volumes may create besides files, directories and links.",
        examples=[{"allow_devices": False, "allow_fifos": False}],
    )
    notify: PolicyNotify | None = Field(
        default=None,
        description=(
            "Notifications about this policy's volumes after each run that backs them up (besides those of "
            "_defaults.yaml about the whole run): Apprise URLs, or http(s):// for coord's JSON webhook."
        ),
        examples=[{"urls": ["ntfy://ntfy.example.com/clickhouse-backups"], "on": ["failure", "warning"]}],
    )
    ping: Pings | None = Field(
        default=None,
        description=(
            "Dead-man pings for this policy's volumes: Healthchecks URLs get /start when a run that backs them up "
            "starts, then success or /fail; Uptime Kuma push URLs get status=up or down when it ends."
        ),
        examples=[{"healthchecks": ["https://hc-ping.com/0f1e2d3c-0000-4000-8000-000000000000"]}],
    )

    expect: list[ExcludePattern] = Field(
        default_factory=list,
        description=(
            "Entries the volume must hold, in the language of exclude (relative to the volume root; an entry below "
            "a matching directory matches too). A pattern that no archived entry matches fails the volume and its "
            "archive is not kept: an exclude that silently dropped every ClickHouse part cannot pass as a backup."
        ),
        examples=[["store/*/*/*_*_*_*", "metadata/*.sql"]],
    )
    anomaly: AnomalySettings = Field(
        default_factory=AnomalySettings,
        description=(
            "An archive whose size or entry count fell by more than max_drop from the volume's last successful one "
            "makes the volume 'warning', with the figures."
        ),
        examples=[{"max_drop": 0.5}],
    )
    targets: list[str] | None = Field(
        default=None,
        min_length=1,
        description=(
            "The targets (named in _defaults.yaml `targets:`, or `local` for --dest) this policy's archives go to; "
            "all of the run's targets when unset. A name that is not a target is an error."
        ),
        examples=[["offsite"], ["local", "offsite"]],
    )

    @field_validator("targets")
    @classmethod
    def _unique_targets(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        duplicates = sorted({name for name in value if value.count(name) > 1})
        if duplicates:
            raise ValueError(f"listed more than once: {', '.join(duplicates)}")
        return value

    @field_validator("volumes")
    @classmethod
    def _unique_volumes(cls, value: list[str]) -> list[str]:
        duplicates = sorted({p for p in value if value.count(p) > 1})
        if duplicates:
            raise ValueError(f"listed more than once: {', '.join(duplicates)}")
        return value

    def selects(self, volume_name: str) -> bool:
        return any(fnmatch.fnmatchcase(volume_name, pattern) for pattern in self.volumes)


@dataclass(frozen=True)
class LoadedPolicy:
    """A validated policy and where it came from."""

    name: str
    path: Path
    policy: Policy


def policy_json_schema() -> dict[str, Any]:
    """The JSON Schema of a policy file, for editors (yaml-language-server) and other tools."""
    schema = Policy.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def render_json_schema() -> str:
    return json.dumps(policy_json_schema(), indent=2, sort_keys=False) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# Loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate mapping keys instead of silently keeping the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"key '{key}' appears twice (first on line {seen[key].start_mark.line + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line_of(root: yaml.Node | None, location: Sequence[str | int], *, key: bool = False) -> int | None:
    """The 1-based line of the YAML node at `location` (the key's line when `key`), or of its deepest ancestor."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for step in location:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(step):
                    line = key_node.start_mark.line + 1
                    node = None if key and step == location[-1] else value_node
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            node = node.value[step]
        else:
            return line
        if node is not None:
            line = node.start_mark.line + 1
    return line


_KIND_WORDS = {
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "true/false",
    list: "a list",
    dict: "a mapping",
}
MAX_SHOWN_VALUE = 40  # characters of a wrong value quoted back; a longer one is not shown (it may span lines)
MAX_NESTING = 32  # levels of mappings and lists; a policy uses four or five


def _kind_of(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    for python_type, word in _KIND_WORDS.items():
        if isinstance(value, python_type) and not (python_type is int and isinstance(value, bool)):
            return word
    return type(value).__name__


def _describe(value: Any) -> str:
    """The kind of a wrong value, and the value itself when short (never more than one line's worth)."""
    word = _kind_of(value)
    if isinstance(value, str | int | float | bool) and value is not None:
        shown = repr(value)
        if len(shown) <= MAX_SHOWN_VALUE and "\n" not in str(value):
            return f"{word} {shown}"
        return f"{word} of {len(str(value))} characters (not shown)"
    return word


def _too_deep_line(text: str) -> int | None:
    """The 1-based line where the YAML in `text` nests deeper than MAX_NESTING, or None.

    Read as a stream of parser events, which needs no recursion (composing a deeper document would exhaust
    Python's stack). Raises yaml.YAMLError for text that is not YAML.
    """
    depth = 0
    for event in yaml.parse(text, Loader=_UniqueKeyLoader):
        if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            depth += 1
            if depth > MAX_NESTING:
                # The parser marks every event it emits (the stubs allow None for events built by hand).
                return event.start_mark.line + 1 if event.start_mark is not None else 1
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            depth -= 1
    return None


def _allowed_keys(location: Sequence[str | int], model: type[BaseModel]) -> list[str]:
    for step in location[:-1]:
        field = model.model_fields.get(str(step)) if isinstance(step, str) else None
        annotation = field.annotation if field else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        elif field is not None:
            inner = [a for a in getattr(annotation, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
            if inner:
                model = inner[0]
    return list(model.model_fields)


def _message_for(error: ErrorDetails, model: type[BaseModel] = Policy) -> str:
    """Turn one pydantic error (from validating `model`) into an operator's sentence."""
    kind = error["type"]
    location = error["loc"]
    value = error.get("input")
    if kind == "extra_forbidden":
        allowed = _allowed_keys(location, model)
        unknown = str(location[-1])
        close = difflib.get_close_matches(unknown, allowed, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown key '{unknown}'{hint}; allowed keys: {', '.join(allowed)}"
    if kind == "missing":
        return "is required"
    if kind == "enum":
        expected = error.get("ctx", {}).get("expected", "")
        choices = ", ".join(re.findall(r"'([^']*)'", expected))
        shown = f"'{value}'" if len(str(value)) <= MAX_SHOWN_VALUE and "\n" not in str(value) else _describe(value)
        return f"{shown} is not one of {choices}"
    if kind == "value_error":
        return str(error.get("ctx", {}).get("error", error["msg"]))
    if kind == "too_short":
        return "must not be empty: list at least one entry"
    if kind == "list_type":
        return f"expected a list, got {_describe(value)}"
    if kind == "string_type":
        return f"expected a string, got {_describe(value)}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected a whole number, got {_describe(value)}"
    if kind in ("float_type", "float_parsing"):
        return f"expected a number, got {_describe(value)}"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false, got {_describe(value)}"
    if kind == "greater_than_equal":
        return f"must be {error.get('ctx', {}).get('ge')} or more, got {_describe(value)}"
    if kind == "less_than_equal":
        return f"must be {error.get('ctx', {}).get('le')} or less, got {_describe(value)}"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"expected a mapping of keys, got {_describe(value)}"
    return str(error["msg"])


def _format_location(location: Sequence[str | int]) -> str:
    text = ""
    for step in location:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else str(step))
    return text


def _where(path: Path, line: int | None) -> str:
    return f"{path}:{line}" if line else str(path)


def parse_policy(path: Path, text: str) -> tuple[Policy | None, list[str]]:
    """Validate one policy file's text. Returns the policy (None when invalid) and every problem found."""
    policy, problems = parse_document(
        path, text, Policy, "volumes, strategy, ...", if_empty="a policy needs at least 'volumes' and 'strategy'"
    )
    if policy is None:
        return None, problems
    return _resolve_files(policy, path, yaml.compose(text, Loader=_UniqueKeyLoader))


def parse_document(
    path: Path, text: str, model: type[DocumentModel], keys_hint: str, if_empty: str | None = None
) -> tuple[DocumentModel | None, list[str]]:
    """Validate a YAML file's text against `model` (its unknown keys forbidden): file:line: key: problem messages.

    Returns the document (None when invalid) and every problem found. An empty file is a problem (`if_empty`
    says why) or, when `if_empty` is None, `model()` with its defaults. `keys_hint` names the expected keys.
    """
    try:
        too_deep = _too_deep_line(text)
        if too_deep is not None:
            return None, [
                f"{path}:{too_deep}: nested more than {MAX_NESTING} levels deep; a policy needs a few levels at most"
            ]
        root = yaml.compose(text, Loader=_UniqueKeyLoader)
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except RecursionError:  # a backstop: _too_deep_line refuses such files before they are composed
        return None, [f"{path}: nested too deeply to read; a policy needs a few levels at most"]
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = error.problem or str(error)
        return None, [f"{where}: YAML syntax error: {problem}"]
    except yaml.YAMLError as error:
        return None, [f"{path}: YAML error: {error}"]
    if data is None and if_empty is None:
        data = {}
    if data is None:
        return None, [f"{path}: the file is empty; {if_empty}"]
    if not isinstance(data, dict):
        line = root.start_mark.line + 1 if root is not None else None
        # The value is not shown: a file that is not a policy at all (a link to /etc/passwd) must not be echoed.
        return None, [f"{_where(path, line)}: expected a mapping of keys ({keys_hint}), got {_kind_of(data)}"]
    try:
        return model.model_validate(data), []
    except RecursionError:
        return None, [f"{path}: nested too deeply to validate; a policy needs a few levels at most"]
    except ValidationError as error:
        problems = []
        for item in error.errors(include_url=False):
            location = tuple(item["loc"])
            line = _line_of(root, location, key=item["type"] == "extra_forbidden")
            key = f"{_format_location(location)}: " if location else ""
            problems.append(f"{_where(path, line)}: {key}{_message_for(item, model)}")
        return None, problems


def _resolve_files(policy: Policy, path: Path, root: yaml.Node | None) -> tuple[Policy | None, list[str]]:
    """Make the files a policy names absolute (relative to the policy's directory) and check they exist."""
    if policy.encrypt is None:
        return policy, []
    updates: dict[str, Path] = {}
    problems = []
    for key in ("recipient_key_file", "passphrase_file"):
        named: Path | None = getattr(policy.encrypt, key)
        if named is None:
            continue
        resolved = named if named.is_absolute() else path.parent.absolute() / named
        if not resolved.is_file():
            line = _line_of(root, ("encrypt", key))
            problems.append(f"{_where(path, line)}: encrypt.{key}: {resolved} does not exist or is not a file")
        updates[key] = resolved
    if problems:
        return None, problems
    return policy.model_copy(update={"encrypt": policy.encrypt.model_copy(update=updates)}), []


def policy_files(directory: Path) -> list[Path]:
    """The policy files in `directory`, sorted by name (the defaults file is not one)."""
    if not directory.is_dir():
        raise UsageError(
            f"policies directory '{directory}' does not exist or is not a directory "
            "(set --policies-dir or COORD_POLICIES_DIR)"
        )
    # Links are listed whatever they point to: one to nothing is reported when read, never skipped silently.
    return sorted(
        p
        for p in directory.iterdir()
        if p.suffix in POLICY_SUFFIXES and p.stem != DEFAULTS_STEM and (p.is_file() or p.is_symlink())
    )


def read_policy_text(path: Path) -> tuple[str | None, list[str]]:
    """The text of a policy (or defaults) file, or (None, the problem that prevents reading it).

    The problem names the file, and the line and column of a byte that is not UTF-8; it never quotes the file.
    """
    if not path.is_file():
        if path.is_symlink() and not path.exists():
            return None, [f"{path}: a symbolic link to {os.readlink(path)}, which does not exist"]
        return None, [f"{path}: not a regular file"]
    try:
        data = path.read_bytes()
    except OSError as error:
        return None, [f"{path}: cannot read: {error.strerror or error}"]
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        return None, [
            f"{path}:{line}:{column}: not UTF-8 text (byte 0x{data[error.start]:02x}); policy files are UTF-8 YAML"
        ]


def load_policies(directory: Path, names: Iterable[str] | None = None) -> list[LoadedPolicy]:
    """Load and validate every policy in `directory`; `names` (file names without suffix) must all exist.

    All policies are returned, also when only some are named: which volume belongs to which policy is decided
    over all of them, and a broken neighbour is reported, not hidden. Raises UsageError for an unknown name and
    PolicyError listing every problem in every file.
    """
    files = policy_files(directory)
    by_name: dict[str, Path] = {}
    problems: list[str] = []
    for path in files:
        if path.stem in by_name:
            problems.append(f"{path}: policy '{path.stem}' is also defined by {by_name[path.stem]}")
        by_name.setdefault(path.stem, path)
    unknown = [name for name in dict.fromkeys(names or ()) if name not in by_name]
    if unknown:
        available = ", ".join(by_name) or "none"
        raise UsageError(
            f"no policy named {', '.join(repr(n) for n in unknown)} in {directory} (available: {available})"
        )
    if not files:
        raise UsageError(f"no policy files ({', '.join('*' + suffix for suffix in POLICY_SUFFIXES)}) in {directory}")

    loaded: list[LoadedPolicy] = []
    for name, path in by_name.items():
        text, file_problems = read_policy_text(path)
        policy = None
        if text is not None:
            policy, file_problems = parse_policy(path, text)
        problems.extend(file_problems)
        if policy is not None:
            loaded.append(LoadedPolicy(name=name, path=path, policy=policy))
    problems.extend(_cross_policy_problems(loaded))
    if problems:
        raise PolicyError(problems)
    return loaded


def _cross_policy_problems(loaded: Sequence[LoadedPolicy]) -> list[str]:
    """Problems no single file shows: the same exact volume name claimed by two policies."""
    owner: dict[str, LoadedPolicy] = {}
    problems = []
    for item in loaded:
        for pattern in item.policy.volumes:
            if is_glob(pattern):
                continue
            if pattern in owner:
                problems.append(
                    f"{item.path}: volumes: '{pattern}' is also selected by {owner[pattern].path}; "
                    "a volume belongs to one policy"
                )
            else:
                owner[pattern] = item
    return problems


def location_in(path: Path, location: Sequence[str | int]) -> str:
    """`file:line` of the key or item at `location` in a policy file already loaded (for problems found later,
    against the engine); just `file` when the file cannot be read again."""
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return str(path)
    return _where(path, _line_of(root, location))


def current_policy_names(policies_dir: Path | None) -> list[str] | None:
    """The names of the policies in `policies_dir` (None when not given or unreadable: nothing is marked gone
    for a missing policy then)."""
    if policies_dir is None:
        return None
    try:
        return [path.stem for path in policy_files(policies_dir)]
    except (UsageError, OSError):
        return None
