"""Policy keys for encryption, retention and restore: validation, line numbers, paths relative to the policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from coord.errors import PolicyError
from coord.policy import load_policies, parse_policy

REPO = Path(__file__).resolve().parents[2]


def parse(tmp_path: Path, text: str) -> tuple[object, list[str]]:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return parse_policy(path, text)


def test_relative_key_files_resolve_against_the_policy_directory(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "offsite.asc").write_text("key")
    (tmp_path / "pass").write_text("secret\n")
    text = "volumes: [v]\nstrategy: live\nencrypt:\n  recipient_key_file: keys/offsite.asc\n"
    policy, problems = parse(tmp_path, text)
    assert problems == []
    assert policy.encrypt.recipient_key_file == tmp_path / "keys" / "offsite.asc"
    policy, problems = parse(tmp_path, f"volumes: [v]\nstrategy: live\nencrypt: {{passphrase_file: {tmp_path}/pass}}\n")
    assert problems == [] and policy.encrypt.passphrase_file == tmp_path / "pass"


@pytest.mark.parametrize(
    ("encrypt", "expected"),
    [
        ("encrypt: {}", "p.yaml:3: encrypt: give exactly one of recipient_key_file"),
        ("encrypt: {recipient_key_file: a, passphrase_file: b}", "got recipient_key_file and passphrase_file"),
        ("encrypt: {passphrase: hunter2}", "unknown key 'passphrase' (did you mean 'passphrase_file'?)"),
        ("encrypt:\n  passphrase_file: missing", "p.yaml:4: encrypt.passphrase_file: "),
        ("encrypt: yes", "encrypt: expected a mapping of keys, got true/false True"),
    ],
)
def test_encrypt_errors_name_the_line_and_the_fix(tmp_path: Path, encrypt: str, expected: str) -> None:
    policy, problems = parse(tmp_path, f"volumes: [v]\nstrategy: live\n{encrypt}\n")
    assert policy is None
    assert any(expected in problem for problem in problems), problems


def test_a_missing_key_file_is_reported_with_its_resolved_path(tmp_path: Path) -> None:
    _, problems = parse(tmp_path, "volumes: [v]\nstrategy: live\nencrypt:\n  passphrase_file: nope\n")
    missing = tmp_path / "nope"
    assert problems == [f"{tmp_path / 'p.yaml'}:4: encrypt.passphrase_file: {missing} does not exist or is not a file"]


@pytest.mark.parametrize(
    ("retention", "expected"),
    [
        ("retention: {}", "retention: give keep_last, keep_days, keep_daily, keep_weekly or keep_monthly"),
        ("retention: {keep_last: 0}", "retention.keep_last: must be 1 or more, got a number 0"),
        ("retention: {keep_days: -1}", "retention.keep_days: must be 0 or more"),
        ("retention: {keep_last: '3'}", "retention.keep_last: expected a whole number, got a string '3'"),
        ("retention: {keep_last: true}", "retention.keep_last: expected a whole number, got true/false True"),
        ("retention: {keep: 3}", "unknown key 'keep'"),
    ],
)
def test_retention_errors(tmp_path: Path, retention: str, expected: str) -> None:
    policy, problems = parse(tmp_path, f"volumes: [v]\nstrategy: live\n{retention}\n")
    assert policy is None
    assert any(expected in problem for problem in problems), problems


def test_retention_and_restore_defaults(tmp_path: Path) -> None:
    policy, problems = parse(
        tmp_path, "volumes: [v]\nstrategy: live\nretention: {keep_days: 0}\nrestore: {allow_fifos: true}\n"
    )
    assert problems == []
    assert (policy.retention.keep_last, policy.retention.keep_days) == (None, 0)
    assert (policy.restore.allow_devices, policy.restore.allow_fifos) == (False, True)
    policy, _ = parse(tmp_path, "volumes: [v]\nstrategy: live\n")
    assert policy.encrypt is None and policy.retention is None and not policy.restore.allow_devices


def test_every_problem_of_every_file_is_reported_at_once(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("volumes: [a]\nstrategy: live\nretention: {keep_last: 0}\n")
    (tmp_path / "b.yaml").write_text("volumes: [b]\nstrategy: live\nrestore: {allow_devices: maybe}\n")
    with pytest.raises(PolicyError) as raised:
        load_policies(tmp_path)
    assert len(raised.value.problems) == 2
