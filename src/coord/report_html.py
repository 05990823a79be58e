"""`coord report --html FILE`: the report as one self-contained page to look at.

Per volume: its figures (runs, successes, warnings, failures, success rate, last success), a timeline of its
runs coloured by status, its archive size and its downtime over the period as charts, and its last restore
drill. The time axis, shared by every volume, spans the period's runs. Everything is inline (CSS in a <style>,
charts as <svg>, no script): the page makes no network request, so it opens from a mail attachment or an
air-gapped host. A pure function of the report and the history rows; every text from the history is
HTML-escaped (volume names and errors come from outside).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from html import escape
from pathlib import Path

from coord.fleet import FleetNode, FleetReport, FleetRow
from coord.history import DrillRow, History, VolumeRow
from coord.node import this_node
from coord.render import human_size, short_time
from coord.report import Period, Report, VolumeSummary, report_for, target_failure_lines

WIDTH = 720  # the charts' drawing width, in SVG units (they scale with the page)
LEFT = 64  # room for the value axis labels
STATUS_COLOURS = {"ok": "#2e7d32", "warning": "#f9a825", "failed": "#c62828", "excluded": "#9e9e9e"}
UNKNOWN_COLOUR = "#616161"

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 900px; color: #212121; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin: 0 0 6px; }
.period, .muted { color: #616161; }
section.volume { border: 1px solid #e0e0e0; border-radius: 6px; padding: 14px 16px; margin: 18px 0; }
table.figures { border-collapse: collapse; margin: 6px 0 10px; }
table.figures td, table.figures th { padding: 2px 10px 2px 0; text-align: left; font-weight: normal; }
table.figures th { color: #616161; }
svg { display: block; width: 100%; height: auto; margin: 4px 0 10px; }
svg text { font: 11px system-ui, sans-serif; fill: #616161; }
.legend span { display: inline-block; margin-right: 14px; }
.legend i { display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin-right: 4px;
  vertical-align: -1px; }
.drill { padding: 6px 10px; border-radius: 4px; }
.drill.ok { background: #e8f5e9; } .drill.failed { background: #ffebee; } .drill.never { background: #f5f5f5; }
.error { color: #c62828; }
h3 { font-size: 15px; margin: 12px 0 4px; }
table.nodes { border-collapse: collapse; margin: 8px 0 4px; }
table.nodes td, table.nodes th { padding: 3px 12px 3px 0; text-align: left; }
table.nodes th { color: #616161; font-weight: normal; }
tr.silent td, section.silent h2 { color: #c62828; } .badge { font-size: 12px; padding: 1px 6px; border-radius: 3px;
  background: #ffebee; color: #c62828; margin-left: 8px; vertical-align: 2px; }
.note { color: #616161; font-size: 13px; }
"""


def _colour(status: str) -> str:
    return STATUS_COLOURS.get(status, UNKNOWN_COLOUR)


class _Axis:
    """Maps a moment of the report's period to an x coordinate of a chart."""

    def __init__(self, start: datetime, end: datetime) -> None:
        self.start = start
        self.span = max((end - start).total_seconds(), 1.0)

    def x(self, moment: datetime) -> float:
        fraction = min(max((moment - self.start).total_seconds() / self.span, 0.0), 1.0)
        return LEFT + fraction * (WIDTH - LEFT - 8)


def _run_title(row: VolumeRow) -> str:
    figures = (
        f"{human_size(row.size)}, downtime {row.downtime_s:.2f}s" if row.size else f"downtime {row.downtime_s:.2f}s"
    )
    error = f": {row.error}" if row.error else ""
    return f"{short_time(row.started_at)} run {row.run_id} {row.status}, {figures}{error}"


def timeline_svg(rows: Sequence[VolumeRow], axis: _Axis, start: datetime, end: datetime) -> str:
    """One mark per run at its time, coloured by status, with the period's ends as labels."""
    marks = "".join(
        f'<rect class="run {escape(row.status)}" x="{axis.x(row.started_at) - 4:.1f}" y="4" width="8" height="26" '
        f'rx="2" fill="{_colour(row.status)}"><title>{escape(_run_title(row))}</title></rect>'
        for row in rows
    )
    return (
        f'<svg class="timeline" viewBox="0 0 {WIDTH} 50" role="img" aria-label="runs by status">'
        f'<text x="0" y="22">runs</text>'
        f'<line x1="{LEFT}" y1="17" x2="{WIDTH - 8}" y2="17" stroke="#e0e0e0" stroke-width="2"/>{marks}'
        f'<text x="{LEFT}" y="46">{escape(short_time(start))}</text>'
        f'<text x="{WIDTH - 8}" y="46" text-anchor="end">{escape(short_time(end))}</text></svg>'
    )


def chart_svg(
    kind: str,
    rows: Sequence[VolumeRow],
    axis: _Axis,
    value: Callable[[VolumeRow], float],
    label: Callable[[float], str],
) -> str:
    """A line over the runs that have a value (archive size: archives written; downtime: every run), a dot per
    run coloured by its status, and the largest value on the axis."""
    points = [(axis.x(row.started_at), value(row), row) for row in rows]
    top = max((v for _, v, _ in points), default=0.0) or 1.0
    height, bottom = 120, 104

    def y(v: float) -> float:
        return bottom - (v / top) * (bottom - 10)

    line = " ".join(f"{x:.1f},{y(v):.1f}" for x, v, _ in points)
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{y(v):.1f}" r="4.5" fill="{_colour(row.status)}">'
        f"<title>{escape(short_time(row.started_at))}: {escape(label(v))}</title></circle>"
        for x, v, row in points
    )
    return (
        f'<svg class="chart {kind}" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{kind} over time">'
        f'<text x="0" y="14">{escape(label(top))}</text><text x="0" y="{bottom}">0</text>'
        f'<line x1="{LEFT}" y1="{bottom}" x2="{WIDTH - 8}" y2="{bottom}" stroke="#bdbdbd"/>'
        f'<line x1="{LEFT}" y1="10" x2="{LEFT}" y2="{bottom}" stroke="#bdbdbd"/>'
        f'<polyline points="{line}" fill="none" stroke="#1565c0" stroke-width="2"/>{dots}'
        f'<text x="{WIDTH - 8}" y="{height - 2}" text-anchor="end">{escape(kind)}</text></svg>'
    )


def drill_html(drill: DrillRow | None) -> str:
    if drill is None:
        return '<div class="drill never">last restore drill: never (run <code>coord drill</code>)</div>'
    archive = escape(drill.archive.rsplit("/", 1)[-1]) if drill.archive else "no archive"
    if drill.target:
        archive += f" from target {escape(drill.target)}"
    compared = (
        f": {drill.entries:,} entries, {drill.files_hashed:,} files ({escape(human_size(drill.bytes_hashed))}) compared"
        if drill.entries
        else ""
    )
    head = (
        f"last restore drill: <b>{'OK' if drill.status == 'ok' else 'FAILED'}</b> "
        f"{escape(short_time(drill.started_at))}, {archive}{compared}"
    )
    problems = "".join(f'<div class="error">{escape(problem)}</div>' for problem in drill.problems[:5])
    return f'<div class="drill {escape(drill.status)}">{head}{problems}</div>'


def figures_table(figures: Sequence[tuple[str, str]]) -> str:
    """A row of names over a row of values."""
    return (
        '<table class="figures"><tr>'
        + "".join(f"<th>{escape(name)}</th>" for name, _ in figures)
        + "</tr><tr>"
        + "".join(f"<td>{escape(value)}</td>" for _, value in figures)
        + "</tr></table>"
    )


def volume_html(
    summary: VolumeSummary, rows: Sequence[VolumeRow], axis: _Axis, period: tuple[datetime, datetime]
) -> str:
    rate = "-" if summary.success_rate is None else f"{summary.success_rate:.0%}"
    figures = (
        ("policy", summary.policy),
        ("runs", str(summary.runs)),
        ("ok", str(summary.successes - summary.warnings)),
        ("warnings", str(summary.warnings)),
        ("failures", str(summary.failures)),
        ("success rate", rate),
        ("max downtime", f"{summary.downtime_max_s:.2f}s"),
        ("last success", short_time(summary.last_success)),
    )
    table = figures_table(figures)
    last_error = f'<div class="error">last error: {escape(summary.last_error)}</div>' if summary.last_error else ""
    last_error += "".join(f'<div class="error">{escape(line)}</div>' for line in target_failure_lines(summary))
    written = [row for row in rows if row.archive]  # a failed run's size is of an archive that was removed
    return (
        f'<section class="volume" data-volume="{escape(summary.volume)}"><h2>{escape(summary.volume)}</h2>'
        f"{table}{last_error}"
        + timeline_svg(rows, axis, *period)
        + chart_svg("archive-size", written, axis, lambda row: float(row.size), human_size)
        + chart_svg("downtime", rows, axis, lambda row: row.downtime_s, lambda seconds: f"{seconds:.2f}s")
        + drill_html(summary.last_drill)
        + "</section>"
    )


def time_range(rows: Sequence[VolumeRow], period: Period) -> tuple[datetime, datetime]:
    """The charts' time axis: from the first to the last run of the period, with a margin (runs minutes apart
    would otherwise share one pixel of a week); the whole period when there are not two distinct times."""
    times = [row.started_at for row in rows]
    if len(set(times)) < 2:
        return period.start, period.end
    first, last = min(times), max(times)
    margin = (last - first) * 0.04
    return first - margin, last + margin


def render_html(report: Report, rows: Sequence[VolumeRow], generated: datetime, node: str | None = None) -> str:
    """The whole page: the report of a period and the volume rows of that period (oldest first), of the volumes
    of `node` (the node coord runs on, named in the heading; this_node() when not given)."""
    node = node if node is not None else this_node()
    period = report.period
    start, end = time_range(rows, period)
    axis = _Axis(start, end)
    counts = ", ".join(f"{n} {status}" for status, n in report.runs.by_status.items() if n) or "none"
    legend = "".join(
        f'<span><i style="background:{colour}"></i>{status}</span>' for status, colour in STATUS_COLOURS.items()
    )
    sections = [
        volume_html(
            summary,
            [row for row in rows if (row.policy, row.volume) == (summary.policy, summary.volume)],
            axis,
            (start, end),
        )
        for summary in report.volumes
    ]
    body = "".join(sections) or '<p class="muted">no volume outcomes recorded in this period</p>'
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>coord report {escape(period.label)}</title><style>{STYLE}</style></head><body>"
        f"<h1>coord report {escape(period.label)}</h1>"
        f'<div class="period">node <span class="node">{escape(node)}</span>; '
        f"{escape(short_time(period.start))} .. {escape(short_time(period.end))}; "
        f"{report.runs.total} run(s): {escape(counts)}; generated {escape(short_time(generated))}</div>"
        f'<p class="legend">{legend}</p>{body}</body></html>\n'
    )


def html_report_for(history: History, period: Period, policies: Iterable[str] | None, now: datetime) -> str:
    """The page for `period`, from the history database."""
    return render_html(report_for(history, period, policies), history.volume_runs(period.start, period.end), now)


def write_html(path: Path, page: str) -> None:
    """Write the page to `path` whole or not at all (a temporary file beside it, renamed over it). Raises OSError."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        temporary.write_text(page, encoding="utf-8")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------------------------
# The fleet report's page (`coord report --fleet --html FILE`): the same style, charts and escaping


def fleet_row_html(row: FleetRow, axis: _Axis, period: tuple[datetime, datetime]) -> str:
    """One node's volume: its figures, its last failure, and a timeline of its runs (from the run records)."""
    rate = row.success_rate
    figures = (
        ("policy", ", ".join(sorted(row.policies)) or "-"),
        ("services", ", ".join(row.service_names) or "-"),
        ("runs", str(row.run_count())),
        ("ok", str(row.run_count("ok"))),
        ("warnings", str(row.run_count("warning"))),
        ("failures", str(row.run_count("failed"))),
        ("success rate", "-" if rate is None else f"{rate:.0%}"),
        ("downtime mean / max", _mean_and_max(row.run_downtimes)),
        ("archives", str(row.archives)),
        ("last success", short_time(row.last_run_success)),
    )
    failure = row.last_failure
    last_failure = (
        f'<div class="error">last failure {escape(short_time(failure.started_at))} (run {failure.run_id}): '
        f"{escape(failure.error or 'failed')}</div>"
        if failure
        else ""
    )
    verdicts = ", ".join(f"{verdict} {n}" for verdict, n in sorted(row.run_verdicts.items()))
    return (
        f'<div class="fleet-row" data-node="{escape(row.node)}" data-volume="{escape(row.volume)}">'
        f"<h3>{escape(row.volume)}</h3>{figures_table(figures)}"
        + (f'<div class="muted">verdicts: {escape(verdicts)}</div>' if verdicts else "")
        + last_failure
        + (timeline_svg(row.counted, axis, *period) if row.counted else "")
        + "</div>"
    )


def _mean_and_max(seconds: Sequence[float]) -> str:
    return f"{sum(seconds) / len(seconds):.2f}s / {max(seconds):.2f}s" if seconds else "-"


def fleet_nodes_html(nodes: Sequence[FleetNode]) -> str:
    """The nodes' table: runs, failed ones, the last record seen; a silent node in red."""
    if not nodes:
        return '<p class="muted">no run record on these targets</p>'
    cells = "".join(
        f'<tr class="{"silent" if node.silent else "seen"}" data-node="{escape(node.node)}">'
        f"<td>{escape(node.node)}</td><td>{sum(node.runs.values())}</td><td>{node.runs.get('ok', 0)}</td>"
        f"<td>{sum(n for status, n in node.runs.items() if status != 'ok')}</td>"
        f"<td>{escape(short_time(node.last_seen))}</td>"
        f"<td>{'SILENT: no run record in this period' if node.silent else ''}</td></tr>"
        for node in nodes
    )
    return (
        '<table class="nodes"><tr><th>node</th><th>runs</th><th>ok</th><th>failed</th><th>last record</th><th></th>'
        f"</tr>{cells}</table>"
    )


def render_fleet_html(report: FleetReport, generated: datetime) -> str:
    """The fleet report as one page: the nodes (silent ones marked), then per node each volume's figures, last
    failure and timeline; what could not be read, and what cannot be seen (notes)."""
    period = report.period
    runs = [run for row in report.rows for run in row.counted]
    start, end = time_range(runs, period)
    axis = _Axis(start, end)
    by_node = {node.node: node for node in report.nodes}
    names = sorted({row.node for row in report.rows} | set(by_node))
    sections = []
    for name in names:
        node = by_node.get(name)
        silent = node is not None and node.silent
        badge = '<span class="badge">silent</span>' if silent else ""
        run_errors = "".join(
            f'<div class="error">run failed {escape(short_time(at))}: {escape(error)}</div>'
            for at, error in (node.run_errors if node else [])
        )
        if silent and node is not None:
            run_errors += (
                f'<div class="error">no run record in this period; its last one started '
                f"{escape(short_time(node.last_seen))}: its coord stopped, or it reaches no target</div>"
            )
        rows = "".join(fleet_row_html(row, axis, (start, end)) for row in report.rows if row.node == name)
        sections.append(
            f'<section class="volume node{" silent" if silent else ""}" data-node="{escape(name)}">'
            f"<h2>{escape(name)}{badge}</h2>{run_errors}{rows}</section>"
        )
    total = sum(sum(node.runs.values()) for node in report.nodes)
    legend = "".join(
        f'<span><i style="background:{colour}"></i>{status}</span>' for status, colour in STATUS_COLOURS.items()
    )
    problems = "".join(f'<div class="error">not read: {escape(error)}</div>' for error in report.errors)
    notes = "".join(f'<div class="note">note: {escape(note)}</div>' for note in report.notes)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>coord fleet report {escape(period.label)}</title><style>{STYLE}</style></head><body>"
        f"<h1>coord fleet report {escape(period.label)}</h1>"
        f'<div class="period">{len(names)} node(s); {escape(short_time(period.start))} .. '
        f"{escape(short_time(period.end))}; {total} run(s) recorded, "
        f"{sum(row.archives for row in report.rows)} archive(s) published; generated "
        f"{escape(short_time(generated))}</div>"
        f"{fleet_nodes_html(report.nodes)}{problems}{notes}"
        f'<p class="legend">{legend}</p>'
        + ("".join(sections) or '<p class="muted">no run recorded and no archive published in this period</p>')
        + "</body></html>\n"
    )
