"""The command line's own behaviour, without Docker: argument order, plurals, exit codes."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from coord.cli import app, global_flags_first
from coord.render import plural, volumes_line


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (["backup", "-v", "--dest", "/x"], ["-v", "backup", "--dest", "/x"]),
        (["--verbose", "plan"], ["--verbose", "plan"]),
        (["plan", "--verbose", "--json"], ["--verbose", "plan", "--json"]),
        (["restore", "a", "--", "-v"], ["restore", "a", "--", "-v"]),
        (["status"], ["status"]),
    ],
)
def test_global_flags_are_accepted_after_the_subcommand(given: list[str], expected: list[str]) -> None:
    assert global_flags_first(given) == expected


def test_verbose_after_the_subcommand_is_not_refused(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text("volumes: [data]\nstrategy: live\n")
    result = CliRunner().invoke(app, global_flags_first(["validate", "-v", "--policies-dir", str(tmp_path)]))
    assert result.exit_code == 0, result.output
    assert "1 policy valid in" in result.output


def test_validate_counts_policies_in_words(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / f"{name}.yml").write_text("volumes: [data_" + name + "]\nstrategy: live\n")
    result = CliRunner().invoke(app, ["validate", "--policies-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"2 policies valid in {tmp_path}: a, b" in result.output


def test_an_empty_policies_directory_names_both_suffixes(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["validate", "--policies-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "no policy files (*.yaml, *.yml)" in result.output


def test_plurals() -> None:
    assert [plural(n, "volume") for n in (0, 1, 2, 1500)] == ["0 volumes", "1 volume", "2 volumes", "1,500 volumes"]
    assert plural(1, "policy", "policies") == "1 policy"
    assert plural(3, "policy", "policies") == "3 policies"
    assert volumes_line(1, 0) == "1 volume, 0 failed"
