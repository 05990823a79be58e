"""The command line's own behaviour, without Docker: argument order, plurals, exit codes."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from coord.cli import app, global_flags_first
from coord.grammar import plural
from coord.render import volumes_line


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


def test_the_progress_bar_estimates_from_the_last_archive_and_shows_steps() -> None:
    import io
    import logging

    from rich.console import Console

    from coord.cli import _ConsoleProgress

    progress = _ConsoleProgress({"pg": 2_000_000}.get)
    screen = io.StringIO()
    progress.console = Console(file=screen, force_terminal=True, width=150, color_system=None)
    progress._steps._console = progress.console
    with progress:
        logging.getLogger("coord.steps").info("pausing %s", "db")
        progress.begin("pg")
        progress.update(entries=1200, written_bytes=1_000_000)
        progress._display.refresh()
        half = screen.getvalue()
        progress.update(entries=2500, written_bytes=3_000_000)  # bigger than last time: the total follows
        progress._display.refresh()
        progress.end()
        progress.begin("new-volume")  # no history: no percentage, no ETA
        progress.update(entries=10, written_bytes=5_000)
        progress._display.refresh()
    assert "coord: pausing db" in half
    assert "archiving pg" in half and "50%" in half and "1.0 MB of ~2.0 MB, 1,200 entries" in half
    rest = screen.getvalue()[len(half) :]
    assert "100%" in rest and "3.0 MB of ~3.0 MB" in rest
    assert "archiving new-volume" in rest and "5.0 KB, 10 entries" in rest and "of ~" not in rest.split("new-volume")[1]
    assert logging.getLogger("coord.steps").propagate is True  # handed back after the run
