"""Policy files coord cannot read: a clear error with exit code 2 (policy error), never a traceback, and never the
content of a file that is not a policy (a link to /etc/passwd)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_coord, write_policy

GOOD = "volumes: [v]\nstrategy: live\n"


def validate(policies: Path) -> tuple[int, str, str]:
    run = run_coord("validate", "--policies-dir", str(policies))
    assert "Traceback" not in run.stderr + run.stdout, run.stderr
    return run.returncode, run.stdout, run.stderr


def test_a_non_utf8_byte_is_reported_with_its_line_and_column(tmp_path: Path) -> None:
    policies = tmp_path / "p"
    policies.mkdir()
    (policies / "bad.yaml").write_bytes(b"volumes: [v]\nstrategy: live\ndescription: caf\xe9 secret\n")
    code, _, stderr = validate(policies)
    assert code == 2
    assert f"{policies}/bad.yaml:3:17: not UTF-8 text (byte 0xe9); policy files are UTF-8 YAML" in stderr
    assert "secret" not in stderr


def test_a_deeply_nested_policy_is_refused_at_the_line_where_it_gets_too_deep(tmp_path: Path) -> None:
    policies = tmp_path / "p"
    write_policy(policies, "deep", GOOD + "exclude: " + "[" * 5000 + "]" * 5000 + "\n")
    write_policy(policies, "mapping", GOOD + "description:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 400)))
    code, _, stderr = validate(policies)
    assert code == 2
    assert f"{policies}/deep.yaml:3: nested more than 32 levels deep" in stderr
    assert f"{policies}/mapping.yaml:35: nested more than 32 levels deep" in stderr


def test_a_policy_linked_to_another_file_never_shows_that_files_content(tmp_path: Path) -> None:
    policies = tmp_path / "p"
    policies.mkdir()
    (policies / "passwd.yaml").symlink_to("/etc/passwd")
    code, _, stderr = validate(policies)
    assert code == 2
    assert f"{policies}/passwd.yaml" in stderr
    passwd = Path("/etc/passwd").read_text().splitlines()
    for line in passwd:  # not one of its lines, nor any user name in it
        assert line not in stderr
        assert line.split(":")[0] not in stderr.replace(str(policies), "")


def test_a_long_wrong_value_is_described_not_quoted(tmp_path: Path) -> None:
    policies = tmp_path / "p"
    write_policy(policies, "long", GOOD.replace("live", "live-" + "x" * 80))
    write_policy(policies, "short", GOOD.replace("[v]", "[w]").replace("live", "paus"))
    code, _, stderr = validate(policies)
    assert code == 2
    assert "long.yaml:2: strategy: 'live-xxx" not in stderr
    assert "long.yaml:2: strategy: " in stderr
    assert "short.yaml:2: strategy: 'paus' is not one of" in stderr


def test_a_dangling_policy_link_is_reported_not_skipped(tmp_path: Path) -> None:
    policies = tmp_path / "p"
    write_policy(policies, "good", GOOD)
    (policies / "gone.yaml").symlink_to(tmp_path / "moved-away.yaml")
    code, _, stderr = validate(policies)
    assert code == 2
    assert f"{policies}/gone.yaml: a symbolic link to {tmp_path}/moved-away.yaml, which does not exist" in stderr


def test_a_broken_defaults_file_is_reported_like_a_policy(tmp_path: Path) -> None:
    policies = tmp_path / "p"
    write_policy(policies, "good", GOOD)
    (policies / "_defaults.yaml").write_bytes(b"notify:\n  log_lines: \xff\n")
    code, _, stderr = validate(policies)
    assert code == 2
    assert f"{policies}/_defaults.yaml:2:14: not UTF-8 text (byte 0xff)" in stderr
