"""The HTML report (`snakemake --report results/report.html`) in a real browser: each table and figure, with its caption.

The report is one HTML file whose JavaScript builds its pages. A user clicks a
category in the menu, then a result's eye button (a table appears in a frame,
a figure as an image) and its info button (the caption). The tests do the same
in headless Chromium (the ``browser`` fixture, tests/conftest.py).

The report is Snakemake's, built from the project's Snakefile over this
package's results tree (conftest.py: evaluation files with known numbers),
whose tables and figures ``brainmets tables`` and ``brainmets figures`` make as
the workflow's rules call them. Training a study for real first would cost
minutes for a report of the same form; the end-to-end workflow test builds
that one and checks that its archive holds every table and figure.
"""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from brainmets.reporting.collect import load_report_config
from brainmets.reporting.figures import figure_stems, training_figure_stems
from brainmets.reporting.tables import TABLE_NAMES

from ..conftest import with_text
from .conftest import FakeResults, build_results

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CAPTIONS = REPO / "workflow" / "report"

#: Each body row of the table in the report's frame: its cells' text, and whether each is bold / underlined.
#: Read once the frame's document is parsed: the frame is reported as navigated when its first bytes
#: arrive, and on a busy machine the parser has then built only the first rows (CI once read 12 of 18).
TABLE_ROWS = """document.readyState === 'complete' && document.querySelector('table tbody tr') && [...document.querySelectorAll('table tbody tr')].map(
    row => [...row.cells].map(cell => ({text: cell.innerText.trim(),
                                        bold: Number(getComputedStyle(cell).fontWeight) >= 700,
                                        underlined: getComputedStyle(cell).textDecorationLine.includes('underline')})))"""


@dataclass
class Report:
    html: Path
    fake: FakeResults

    @property
    def url(self) -> str:
        return self.html.as_uri()


def _run(*command: str | Path, cwd: Path) -> None:
    proc = subprocess.run([str(part) for part in command], capture_output=True, text=True, cwd=cwd, timeout=300)
    assert proc.returncode == 0, f"{command[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Report:
    fake = build_results(tmp_path_factory.mktemp("report"))
    for verb in ("tables", "figures"):
        _run(BIN / "brainmets", verb, "--results", fake.results, "--config", fake.config,
             "--out-dir", fake.results / verb, cwd=fake.root)
    # the same config for Snakemake, pointed at this results tree; no MLflow store to create
    where = fake.root / "here.yaml"
    # (the fake study has no seed ensembles, which config.yaml turns on)
    where.write_text(f"results: {fake.results}\ntracking: {{enabled: false}}\nensembles: {{enabled: false}}\n")
    html = fake.root / "report.html"
    _run(BIN / "snakemake", "-s", REPO / "Snakefile", "-d", fake.root, "--configfile", fake.config, where,
         "--report", html, cwd=fake.root)
    return Report(html, fake)


def caption_title(stem: str) -> str:
    """The bold opening of a result's caption (workflow/report/<stem>.rst), as the report shows it."""
    match = re.search(r"\*\*(.+?)\*\*", (CAPTIONS / f"{stem}.rst").read_text(), re.S)
    assert match, f"{stem}.rst has no bold title"
    return " ".join(match.group(1).split())


def show_result(browser, category: str, stem: str) -> None:
    """Open ``category`` (from the menu, or from the path above a caption) and click the eye button of ``stem``."""
    browser.click(with_text("a", category), f"the {category} category")
    browser.click(with_text("tr", stem) + "?.querySelectorAll('a')[0]", f"the view button of {stem}")


def check_caption(browser, stem: str) -> None:
    """Click the info button of result ``stem``; the side bar shows its caption, the template filled in."""
    browser.click(with_text("tr", stem) + "?.querySelectorAll('a')[1]", f"the info button of {stem}")
    title = caption_title(stem)
    shown = browser.wait_for("document.body.innerText.includes(%r) && document.body.innerText" % title,
                             f"the caption of {stem}")
    assert "{{" not in shown and "}}" not in shown, f"caption of {stem} shows its template:\n{shown}"


def test_report_shows_every_table_with_its_rows_marks_and_caption(report, browser):
    browser.open(report.url)
    for name in TABLE_NAMES:
        show_result(browser, "Tables", name)
        frame = browser.frame_context(browser.wait_for("document.querySelector('iframe')?.src", f"the frame of {name}"))
        rows = browser.wait_for(TABLE_ROWS, f"the rows of {name}", context=frame)
        numbers = pd.read_csv(report.fake.results / "tables" / f"{name}.csv")
        assert len(rows) == len(numbers), (name, rows)
        shown = {cell["text"] for row in rows for cell in row}
        labels = set(numbers["subset" if "subset" in numbers else "model"])
        assert labels <= shown, (name, labels - shown)
        if name == "table1_modality":
            # the marks render: the best subset by legacy WT Dice bold, the second underlined, the rest plain
            order = numbers.sort_values("legacy_dice_WT", ascending=False)["subset"].tolist()
            by_subset = {row[0]["text"]: row[1:] for row in rows}
            assert all(cell["bold"] and not cell["underlined"] for cell in by_subset[order[0]]), by_subset[order[0]]
            assert all(cell["underlined"] and not cell["bold"] for cell in by_subset[order[1]]), by_subset[order[1]]
            assert not any(cell["bold"] or cell["underlined"] for cell in by_subset[order[-1]]), by_subset[order[-1]]
        check_caption(browser, name)


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's header (IHDR, the first chunk)."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", header[16:24])


def test_report_shows_every_figure_with_its_caption(report, browser):
    stems = figure_stems(load_report_config(report.fake.config))
    training = training_figure_stems(load_report_config(report.fake.config))
    for category, shown in (("Figures", [s for s in stems if s not in training]), ("Training curves", training)):
        browser.open(report.url)
        for stem in shown:
            show_result(browser, category, stem)
            # the browser decoded the PNG: its natural size is the file's
            size = browser.wait_for(
                "(() => { const image = document.querySelector('img[src^=\"data:image/png\"]');"
                " return image && image.complete && image.naturalWidth && image.src.includes(%r)"
                " ? [image.naturalWidth, image.naturalHeight] : null; })()" % f"filename={stem}.png",
                f"the image of {stem}")
            assert tuple(size) == png_size(report.fake.results / "figures" / f"{stem}.png"), stem
            check_caption(browser, stem)
