"""The README's ClickHouse table is the rendering of the committed e2e results, and those results are sound."""

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def load_script():
    path = REPO / "scripts" / "clickhouse-strategies.py"
    spec = importlib.util.spec_from_file_location("clickhouse_strategies", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_table_is_the_rendering_of_the_committed_results() -> None:
    script = load_script()
    document = json.loads(script.RESULTS.read_text())
    assert script.current_block(script.README.read_text()) == script.render(document), (
        "README.md's ClickHouse table is stale: run scripts/clickhouse-strategies.py"
    )


def test_committed_results_cover_every_strategy_and_never_hide_lost_rows() -> None:
    script = load_script()
    runs = json.loads(script.RESULTS.read_text())["runs"]
    assert {run["label"] for run in runs} == set(script.LABELS)
    for run in runs:
        if run["rows_missing"]:
            assert run["verdict"] == "at-risk", run
        if run["strategy"] in ("pause", "stop", "snapshot"):
            assert (run["verdict"], run["rows_missing"]) == ("consistent", 0), run
