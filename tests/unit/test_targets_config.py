"""Targets in _defaults.yaml and a policy's `targets:`: validation with file:line, kinds, unknown names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coord.defaults import Defaults, load_defaults
from coord.errors import PolicyError
from coord.policy import LoadedPolicy, parse_document, parse_policy
from coord.targets.config import LocalTargetConfig, RcloneTargetConfig, unknown_target_problems


def defaults_problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "_defaults.yaml"
    path.write_text(text)
    defaults, problems = parse_document(path, text, Defaults, "notify, targets")
    assert defaults is None
    return [problem.removeprefix(f"{tmp_path}/") for problem in problems]


def test_both_kinds_load_and_resolve(tmp_path: Path) -> None:
    (tmp_path / "_defaults.yaml").write_text(
        "targets:\n  local: {path: /backups}\n  offsite: {rclone: 'offsite:coord-backups/'}\n"
    )
    targets = load_defaults(tmp_path).targets
    assert targets["local"].resolved() == LocalTargetConfig(Path("/backups"))
    assert targets["offsite"].resolved() == RcloneTargetConfig("offsite:coord-backups")  # trailing / dropped


def test_no_targets_key_means_none(tmp_path: Path) -> None:
    assert load_defaults(tmp_path).targets == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "targets:\n  offsite: {}\n",
            "_defaults.yaml:2: targets.offsite: give `path:` (a local directory), `rclone:` (remote:path) or "
            "`restic:` (a restic repository URL), got neither",
            id="neither",
        ),
        pytest.param(
            "targets:\n  offsite: {path: /b, rclone: 'r:b'}\n",
            "_defaults.yaml:2: targets.offsite: give `path:` (a local directory), `rclone:` (remote:path) or "
            "`restic:` (a restic repository URL), got both",
            id="both",
        ),
        pytest.param(
            "targets:\n  local: {path: /b}\n  offsite:\n    rclnoe: 'r:b'\n",
            "_defaults.yaml:4: targets.offsite.rclnoe: unknown key 'rclnoe' (did you mean 'rclone'?); allowed keys: "
            "path, rclone, restic, password_file",
            id="unknown-key",
        ),
        pytest.param(
            "targets:\n  local: {path: backups}\n",
            "_defaults.yaml:2: targets.local.path: 'backups' is relative; give an absolute directory "
            "(coord may run from anywhere)",
            id="relative-path",
        ),
        pytest.param(
            "targets:\n  offsite: {rclone: 'https://user:hunter2@example.com/b'}\n",
            "_defaults.yaml:2: targets.offsite.rclone: looks like a URL or carries a user; name an rclone remote "
            "(`remote:path`) and keep its credentials in rclone's configuration",
            id="url-with-credentials",
        ),
        pytest.param(
            "targets:\n  'off:site': {path: /b}\n",
            "_defaults.yaml:2: targets: target name 'off:site': use letters, digits, '_', '.', '-' (it starts a ref "
            "`<target>:<volume>/<file>`)",
            id="bad-name",
        ),
        pytest.param(
            "targets:\n  offsite: 'r:b'\n",
            "_defaults.yaml:2: targets.offsite: expected a mapping of keys, got a string 'r:b'",
            id="not-a-mapping",
        ),
    ],
)
def test_bad_targets_are_reported_with_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    assert defaults_problems(tmp_path, text) == [expected]


def test_a_url_with_a_password_is_never_echoed(tmp_path: Path) -> None:
    problems = defaults_problems(tmp_path, "targets:\n  offsite: {rclone: 'https://user:hunter2@example.com/b'}\n")
    assert all("hunter2" not in problem for problem in problems)


def loaded(tmp_path: Path, text: str) -> LoadedPolicy:
    path = tmp_path / "db.yaml"
    path.write_text(text)
    policy, problems = parse_policy(path, text)
    assert policy is not None, problems
    return LoadedPolicy("db", path, policy)


def test_a_policy_naming_an_unknown_target_gets_file_line_and_a_hint(tmp_path: Path) -> None:
    item = loaded(tmp_path, "volumes: [v]\nstrategy: live\ntargets:\n  - local\n  - ofsite\n")
    assert unknown_target_problems([item], ["local", "offsite"]) == [
        f"{tmp_path}/db.yaml:5: targets[1]: no target named 'ofsite' (did you mean 'offsite'?); the targets are "
        "local, offsite (_defaults.yaml `targets:`, or `local` for --dest)"
    ]
    assert unknown_target_problems([item], ["local", "ofsite"]) == []


def test_a_policy_without_targets_uses_all(tmp_path: Path) -> None:
    item = loaded(tmp_path, "volumes: [v]\nstrategy: live\n")
    assert item.policy.targets is None
    assert unknown_target_problems([item], []) == []


@pytest.mark.parametrize(
    ("targets", "expected"),
    [
        ("targets: []", "p.yaml:3: targets: must not be empty: list at least one entry"),
        ("targets: [a, a]", "p.yaml:3: targets: listed more than once: a"),
    ],
)
def test_policy_targets_key_is_validated(tmp_path: Path, targets: str, expected: str) -> None:
    path = tmp_path / "p.yaml"
    text = f"volumes: [v]\nstrategy: live\n{targets}\n"
    policy, problems = parse_policy(path, text)
    assert policy is None
    assert [problem.removeprefix(f"{tmp_path}/") for problem in problems] == [expected]


def test_load_defaults_raises_every_problem(tmp_path: Path) -> None:
    (tmp_path / "_defaults.yaml").write_text("targets:\n  a: {}\n  b: {path: rel}\n")
    with pytest.raises(PolicyError) as raised:
        load_defaults(tmp_path)
    assert len(raised.value.problems) == 2


def test_validate_reports_a_policy_naming_an_unknown_target(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from coord.cli import app

    (tmp_path / "_defaults.yaml").write_text("targets:\n  offsite: {rclone: 'r:b'}\n")
    (tmp_path / "db.yaml").write_text("volumes: [v]\nstrategy: live\ntargets: [local, ofsite]\n")
    result = CliRunner().invoke(app, ["validate", "--json", "--policies-dir", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 2
    assert json.loads(result.stdout)["errors"] == [
        f"{tmp_path}/db.yaml:3: targets[1]: no target named 'ofsite' (did you mean 'offsite'?); the targets are "
        "local, offsite (_defaults.yaml `targets:`, or `local` for --dest)"
    ]


def test_schema_of_the_defaults_file_describes_targets() -> None:
    from typer.testing import CliRunner

    from coord.cli import app

    result = CliRunner().invoke(app, ["schema", "--defaults"], catch_exceptions=False)
    schema = json.loads(result.stdout)
    assert set(schema["properties"]) == {"notify", "ping", "metrics", "targets", "run_records"}
    target = schema["$defs"]["TargetConfig"]
    assert set(target["properties"]) == {"path", "rclone", "restic", "password_file"}
    assert target["additionalProperties"] is False
