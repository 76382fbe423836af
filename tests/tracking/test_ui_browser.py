"""`mlflow ui` on the study's store as a user sees it in a browser (README, "Browsing runs in MLflow").

Headless Chromium (the ``browser`` fixture, tests/conftest.py) opens the
experiments page and an experiment's runs table at the URL README gives, opens
the study's parent run to show its children, and sorts by the test lesion-wise
Dice as README says. What the page shows is compared with the REST API of the
same server, which test_browse.py and test_sync.py check against the study's
files.
"""

from __future__ import annotations

import json

import pytest

from brainmets.tracking import experiment_name, runs_table_path

from ..conftest import with_text
from .conftest import MlflowServer, tags

pytestmark = pytest.mark.xdist_group("tracking")

ORDER_KEY = "test/lesion_dice_avg"
NAME_COLUMN = "attributes.`Run Name`"
ORDER_COLUMN = f"metrics.`{ORDER_KEY}`"

#: The runs table as shown, top to bottom: one object per run with its id and each shown column's text
#: (the grid draws the pinned name column and the others in separate row elements of one row id).
GRID = """(() => {
    const rows = new Map();
    for (const row of document.querySelectorAll('[role=row][row-id]')) {
        const id = row.getAttribute('row-id');
        const entry = rows.get(id) || {id: id, index: Number(row.getAttribute('row-index'))};
        for (const cell of row.querySelectorAll('[col-id]')) {
            entry[cell.getAttribute('col-id')] = (cell.querySelector('a') || cell).innerText.trim();
        }
        rows.set(id, entry);
    }
    return [...rows.values()].sort((a, b) => a.index - b.index);
})()"""


def shown_names(names: list[str]) -> str:
    """JavaScript: the grid's rows, once their run names are exactly ``names`` in any order."""
    return ("(() => { const rows = %s; const names = rows.map(row => row[%s]).sort();"
            " return names.join('\\n') === %s ? rows : null; })()"
            % (GRID, json.dumps(NAME_COLUMN), json.dumps("\n".join(sorted(names)))))


def sorted_by(values: dict[str, float | None]) -> str:
    """JavaScript: the grid's rows, once it shows every run of ``values`` (run id -> value or None), with the
    order column, best first and runs without a value last."""
    return ("(() => { const rows = %s, values = %s;"
            " if (rows.length !== Object.keys(values).length || !rows.every(row => %s in row)) return null;"
            " const order = rows.map(row => values[row.id]);"
            " const descending = order.every((value, i) => i === 0 || value === null"
            "   || (order[i - 1] !== null && order[i - 1] >= value));"
            " return descending ? rows : null; })()"
            % (GRID, json.dumps(values), json.dumps(ORDER_COLUMN)))


def test_mlflow_ui_shows_the_study_runs_nested_and_sorted_by_test_dice(study, browser, tmp_path):
    server = MlflowServer(f"sqlite:///{study.db}", study.results / "mlflow" / "artifacts", tmp_path / "ui.log")
    server.command[1] = "ui"  # the README's command
    with server:
        experiments = server.experiments()
        studies = [experiment_name(name) for name in ("modality", "twostage", "baselines")]
        browser.open(f"{server.url}/#/experiments")
        browser.wait_for(" && ".join(f"document.body.innerText.includes({json.dumps(name)})" for name in studies),
                         f"the experiments {studies}")

        experiment = experiments[experiment_name("modality")]
        runs = server.runs(experiment)
        parents = [run["info"]["run_name"] for run in runs if tags(run).get("role") == "parent"]
        children = [run["info"]["run_name"] for run in runs if tags(run).get("role") == "child"]
        assert len(parents) == 1 and len(children) >= 2, [r["info"]["run_name"] for r in runs]

        # the README's URL opens the runs table (not the GenAI traces page) with the children under the parent
        browser.open(server.url + runs_table_path(experiment))
        browser.wait_for(shown_names(parents), f"the parent run {parents[0]} alone")
        browser.click("[...document.querySelectorAll('[role=row]')].find(row => [...row.querySelectorAll('a')]"
                      f".some(link => link.innerText.trim() === {json.dumps(parents[0])}))"
                      "?.querySelector('button[data-component-id*=runnamecellrenderer]')",
                      f"the + of the parent run {parents[0]}")
        browser.wait_for(shown_names(parents + children), f"the child runs {children}")

        # Sort -> test/lesion_dice_avg: every run flat, best first, the column shown with each run's value
        values = {run["info"]["run_id"]: next((m["value"] for m in run["data"].get("metrics", [])
                                                if m["key"] == ORDER_KEY), None) for run in runs}
        browser.click("[...document.querySelectorAll('button')].find(b => b.innerText.trim().startsWith('Sort:'))",
                      "the Sort button")
        browser.click(with_text("[role=menuitemcheckbox]", ORDER_KEY), f"{ORDER_KEY} in the Sort menu")
        rows = browser.wait_for(sorted_by(values), f"the runs sorted by {ORDER_KEY} (values {values})")
        for row in rows:
            value, text = values[row["id"]], row[ORDER_COLUMN]
            if value is None:
                assert text == "-", row
            else:  # what is shown is the value rounded to the digits shown
                digits = len(text.partition(".")[2])
                assert abs(float(text) - value) <= 0.5 * 10 ** -digits + 1e-12, row
        assert rows[-1][NAME_COLUMN] == parents[0]  # the parent has no outcome: last
