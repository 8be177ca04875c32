"""report.html: self-contained, opened from disk in a real headless Chromium."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

from browser import chromium  # noqa: F401  (the fixture)
from test_query_report import (
    OBJECTIVES,
    optimize_trials,
    reevaluation_trials,
    write_study,
)

from contract.columns import REPORT_HTML
from results.report import write_report
from results.report_html import accuracy_figure


class ScriptSources(HTMLParser):
    """The src of every <script> tag (a script's own text is not parsed as tags)."""

    def __init__(self):
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "script" and dict(attrs).get("src"):
            self.sources.append(dict(attrs)["src"])


def script_sources(page: str) -> list[str]:
    parser = ScriptSources()
    parser.feed(page)
    return parser.sources


def test_report_html_is_written_and_self_contained(tmp_path: Path) -> None:
    study_dir = write_study(tmp_path, "synth", optimize_trials(), OBJECTIVES)
    report = write_report(study_dir)
    page = (study_dir / REPORT_HTML).read_text()
    assert report.html == study_dir / REPORT_HTML
    assert script_sources(page) == []  # every script inline: plotly.js itself too
    assert "Plotly.newPlot" in page and len(page) > 1_000_000
    assert REPORT_HTML in (study_dir / "report.md").read_text()


def test_reevaluation_accuracy_has_a_band_per_method() -> None:
    trials = reevaluation_trials()
    fig = accuracy_figure(trials, "test_accuracy")
    bands = [t for t in fig.data if t.fill == "toself"]
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert sorted(t.name for t in lines) == ["dense", "rigl", "set"]
    assert len(bands) == 3
    rigl = next(t for t in lines if t.name == "rigl")
    band = bands[[t.name for t in lines].index("rigl")]
    # the band spans mean +- std over the 3 seeds at each sparsity: upper above, lower below
    upper = list(band.y[: len(rigl.y)])
    assert all(u > m for u, m in zip(upper, rigl.y, strict=True))


def test_report_html_in_chromium(chromium, tmp_path: Path) -> None:  # noqa: F811
    """Opened from disk: one point per completed trial in the Pareto plot, a trial's config in
    the tooltip on hover, a click filters the table, headers sort it, nothing leaves."""
    trials = optimize_trials()
    study_dir = write_study(tmp_path, "synth", trials, OBJECTIVES)
    write_report(study_dir)
    completed = trials[trials["status"] == "completed"]

    page = chromium.page()
    page.goto((study_dir / REPORT_HTML).as_uri())
    points = page.locator("#pareto-0 .scatterlayer .point")
    points.first.wait_for()
    assert points.count() == len(completed)  # every layer's trace together

    # hover the first point: the tooltip names a trial and shows its config
    page.locator("#pareto-0").scroll_into_view_if_needed()
    box = points.first.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    tooltip = page.locator(".hoverlayer .hovertext").first
    tooltip.wait_for(timeout=5000)
    lines = page.eval_on_selector_all(
        ".hoverlayer .hovertext tspan.line", "els => els.map(e => e.textContent)"
    )
    assert lines[0].startswith("trial "), lines
    trial_id = lines[0].removeprefix("trial ")
    row = completed.set_index("trial_id").loc[trial_id]
    assert f"method: {row['config/method']}" in lines
    assert f"width: {row['config/width']}" in lines
    assert f"sparsity: {row['config/sparsity']:.6g}" in lines
    assert f"val_error: {row['val_error']:.6g}" in lines

    # a click filters the trials table to that trial
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    visible = page.locator("#trials-table tbody tr:visible")
    assert visible.count() == 1 and visible.first.get_attribute("data-trial") == trial_id
    page.locator("#show-all").click()
    assert page.locator("#trials-table tbody tr:visible").count() == len(completed)

    # the layer-1 table sorts by a clicked header, both ways
    headers = page.locator("#layer1 th")
    names = [headers.nth(i).text_content() for i in range(headers.count())]
    column = names.index("val_error")
    headers.nth(column).click()
    cells = page.locator(f"#layer1 tbody tr td:nth-child({column + 1})")
    ascending = [float(cells.nth(i).text_content()) for i in range(cells.count())]
    assert ascending == sorted(ascending) and len(ascending) >= 2
    headers.nth(column).click()
    descending = [float(cells.nth(i).text_content()) for i in range(cells.count())]
    assert descending == sorted(ascending, reverse=True)

    assert chromium.outside == [], f"requests left the machine: {chromium.outside}"
    page.close()
