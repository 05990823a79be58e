"""`coord report --html`: the page's structure (parsed), that it makes no network request, and that it renders:
Debian's headless Chromium takes a screenshot, which must not be blank and must show each status's colour."""

from __future__ import annotations

import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

from conftest import run_coord
from coord.history import DrillRow, History
from coord.report_html import STATUS_COLOURS
from coord.results import ContainerAction, RunResult, VolumeResult, VolumeStatus
from pngfile import chromium_screenshot

WEEK_START = datetime(2026, 11, 23, tzinfo=UTC)  # Monday of 2026-W48


def volume(name: str, status: str, size: int, downtime: float) -> VolumeResult:
    result = VolumeResult(volume=name, policy="db", strategy="pause", status=VolumeStatus(status))
    result.containers = [ContainerAction("c", "0" * 12, "paused", "running", seconds=downtime)]
    if status != "failed":
        result.archive, result.size, result.entries = f"/b/{name}/{name}-x.tar.zst", size, 100
    else:
        result.errors.append("cannot write to destination /b: No space left on device")
    return result


def week_of_history(state: Path) -> None:
    """Two volumes, a run a day: pg ok, ok, warning, failed, ok...; a <script> in a volume name must stay text."""
    history = History(state)
    statuses = ["ok", "ok", "warning", "failed", "ok", "ok", "warning"]
    for day, status in enumerate(statuses):
        started = WEEK_START + timedelta(days=day, hours=3)
        volumes = [
            volume("pg", status, 5_000_000 + day * 400_000, 0.2 + day * 0.1),
            volume("<script>x</script>", "ok" if day != 5 else "failed", 80_000, 0.0),
        ]
        result = RunResult(volumes=volumes)
        run_id = history.start_run("schedule", now=started)
        history.finish_run(run_id, "ok" if result.ok else "failed", result, now=started + timedelta(minutes=2))
    drill_at = WEEK_START + timedelta(days=6, hours=5)
    history.record_drill(
        DrillRow(0, drill_at, drill_at, "pg", "/b/pg/pg-x.tar.zst", "ok", "schedule", 100, 40, 5_000_000, 3.2, [])
    )
    problem = "has sha256 1f2e, its manifest says 9a8b: the archive no longer matches its manifest"
    history.record_drill(
        DrillRow(0, drill_at, drill_at, "<script>x</script>", None, "failed", "manual", 0, 0, 0, 0.1, [problem])
    )


class Page(HTMLParser):
    """Every start tag with its attributes, and the text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {name: value or "" for name, value in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def with_class(self, tag: str, css_class: str) -> list[dict[str, str]]:
        return [attrs for name, attrs in self.tags if name == tag and css_class in attrs.get("class", "").split()]


def test_the_html_report_is_self_contained_and_renders(tmp_path: Path) -> None:
    state, page_path = tmp_path / "state", tmp_path / "report.html"
    week_of_history(state)
    done = run_coord(
        "report", "--week", "2026-W48", "--state-dir", str(state), "--html", str(page_path),
        env={"COORD_NODE": "node-a"},  # the node whose volumes these are, as compose/stack.yml sets it
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"wrote {page_path}" in done.stderr and "last drill" in done.stdout
    html = page_path.read_text()

    page = Page()
    page.feed(html)
    sections = page.with_class("section", "volume")
    assert [s["data-volume"] for s in sections] == ["<script>x</script>", "pg"]
    assert len(page.with_class("span", "node")) == 1 and '<span class="node">node-a</span>' in html
    assert len(page.with_class("svg", "timeline")) == 2
    assert len(page.with_class("svg", "archive-size")) == len(page.with_class("svg", "downtime")) == 2
    assert len(page.with_class("rect", "run")) == 14 and len(page.with_class("rect", "failed")) == 2
    assert [d["class"] for d in page.with_class("div", "drill")] == ["drill failed", "drill ok"]
    assert "the archive no longer matches its manifest" in "".join(page.text)
    # No network: nothing that loads (script, link, img, iframe...), no URL in an attribute or in the CSS.
    assert {name for name, _ in page.tags} <= {
        "html", "head", "meta", "title", "style", "body", "h1", "h2", "div", "p", "span", "i", "b", "code",
        "section", "table", "tr", "th", "td", "svg", "text", "line", "rect", "polyline", "circle",
    }  # fmt: skip
    assert "url(" not in html and "http" not in html and "@import" not in html

    screenshot = tmp_path / "report.png"
    pixels = chromium_screenshot(page_path, screenshot, 1000, 1500)
    colours = Counter(pixels)
    white = colours[(255, 255, 255)]
    assert len(colours) > 50 and white < 0.97 * len(pixels), colours.most_common(5)  # not blank
    for status in ("ok", "warning", "failed"):  # each status's marks are drawn, in its colour
        value = STATUS_COLOURS[status].lstrip("#")
        rgb = tuple(int(value[i : i + 2], 16) for i in (0, 2, 4))
        assert colours[rgb] > 100, (status, colours.most_common(10))
    print(f"screenshot {screenshot}: {len(colours)} colours", file=sys.stderr)
