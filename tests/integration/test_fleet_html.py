"""`coord report --fleet --html`: the fleet report's page, from run records and manifests on a real local target.
Its structure (parsed): a row per node and volume with runs and success rate, the last failure's message, the
silent node marked; no network request; and Debian's headless Chromium renders it (not blank, each status's
colour drawn). The screenshot is docs/fleet-report-example.png's source."""

from __future__ import annotations

import json
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest import run_coord
from coord.consistency import Verdict
from coord.history import RunRow
from coord.policy import Strategy
from coord.report_html import STATUS_COLOURS
from coord.results import ContainerAction, RunResult, TargetResult, TargetStatus, VolumeResult, VolumeStatus
from coord.run_records import RUNS_DIRECTORY, build_record, record_name
from integration.test_report_html import Page
from pngfile import chromium_screenshot

WEEK_START = datetime(2026, 11, 23, tzinfo=UTC)  # Monday of 2026-W48
EXPECT_FAILURE = "expect: no archived entry matches 'PG_VERSION' (the policy says the volume must hold such entries)"


def volume(name: str, status: str, service: str, downtime: float) -> VolumeResult:
    result = VolumeResult(volume=name, policy="db", strategy=Strategy.PAUSE, status=VolumeStatus(status))
    result.containers = [ContainerAction(f"{service}.1.x", "0" * 12, "paused", "running", downtime, service=service)]
    if status == "failed":
        result.errors.append(EXPECT_FAILURE)
        result.targets = [TargetResult("shared", TargetStatus.SKIPPED)]
    else:
        result.verdict = Verdict.CONSISTENT
        result.targets = [TargetResult("shared", TargetStatus.OK, ref=f"shared:{name}/{name}-x.tar.zst")]
    return result


def publish(root: Path, node: str, run_id: int, started: datetime, *volumes: VolumeResult) -> None:
    """One run's record on the target, as `coord backup` publishes it."""
    result = RunResult(volumes=list(volumes))
    status = "ok" if result.ok else "failed"
    run = RunRow(run_id, started, started + timedelta(minutes=2), status, "schedule", 7, None, node, [], [], 1, 0)
    path = root / RUNS_DIRECTORY / node / record_name(started, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(build_record(node, run, result)))


def fleet_week(root: Path) -> None:
    """node-a: a run a day, pg failing on Thursday and Saturday; node-b: every run ok, a `<script>` volume name
    that must stay text; node-c: its last record is from the week before (silent)."""
    for day in range(7):
        started = WEEK_START + timedelta(days=day, hours=3)
        status = "failed" if day in (3, 5) else "ok"
        publish(root, "node-a", day + 1, started, volume("pg-data", status, "app_pg", 0.2 + day * 0.05))
        publish(root, "node-b", day + 1, started + timedelta(minutes=5),
                volume("<script>x</script>", "ok", "web", 0.1), volume("ch-data", "ok", "app_ch", 1.5))  # fmt: skip
    publish(root, "node-c", 40, WEEK_START - timedelta(days=2), volume("ch-data", "ok", "app_ch", 1.0))


def test_the_fleet_page_shows_rows_rates_the_last_failure_and_the_silent_node(tmp_path: Path) -> None:
    root, page_path = tmp_path / "shared", tmp_path / "fleet.html"
    fleet_week(root)
    done = run_coord("report", "--fleet", "--week", "2026-W48", "--dest", str(root), "--html", str(page_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"wrote {page_path}" in done.stderr
    html = page_path.read_text()

    page = Page()
    page.feed(html)
    nodes = page.with_class("section", "node")
    assert [section["data-node"] for section in nodes] == ["node-a", "node-b", "node-c"]
    assert [section["class"] for section in nodes][2] == "volume node silent"
    assert [row["data-node"] for row in page.with_class("tr", "silent")] == ["node-c"]
    rows = [(row["data-node"], row["data-volume"]) for row in page.with_class("div", "fleet-row")]
    assert rows == [("node-a", "pg-data"), ("node-b", "<script>x</script>"), ("node-b", "ch-data")]
    text = "".join(page.text)
    assert "success rate" in text and "71%" in text and "100%" in text  # node-a 5 of 7, node-b 7 of 7
    assert f"last failure 2026-11-28 03:00:00Z (run 6): {EXPECT_FAILURE}" in text
    assert "SILENT: no run record in this period" in text and "app_pg" in text and "consistent 5" in text
    assert "no run record in this period; its last one started 2026-11-21 00:00:00Z" in text
    assert "<script>x" not in html.replace("&lt;script&gt;", "")  # escaped wherever it appears
    assert len(page.with_class("svg", "timeline")) == 3 and len(page.with_class("rect", "failed")) == 2
    assert len(page.with_class("rect", "run")) == 21
    assert {name for name, _ in page.tags} <= {
        "html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "div", "p", "span", "i", "b",
        "section", "table", "tr", "th", "td", "svg", "text", "line", "rect",
    }  # fmt: skip
    assert "url(" not in html and "http" not in html and "@import" not in html

    screenshot = tmp_path / "fleet.png"
    pixels = chromium_screenshot(page_path, screenshot, 1000, 1300)
    colours = Counter(pixels)
    assert len(colours) > 50 and colours[(255, 255, 255)] < 0.97 * len(pixels), colours.most_common(5)
    for status in ("ok", "failed"):  # the runs' marks are drawn, in their status's colour
        value = STATUS_COLOURS[status].lstrip("#")
        assert colours[tuple(int(value[i : i + 2], 16) for i in (0, 2, 4))] > 100, (status, colours.most_common(10))
    print(f"screenshot {screenshot}: {len(colours)} colours", file=sys.stderr)
