"""docs/paper-fidelity.md agrees with configs/paper.yaml, so the table cannot drift from the config.

The paper config is merged over config.yaml and validated exactly as Snakemake
reads it (``--configfile configs/paper.yaml``), defaults filled by the schema.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import yaml

from brainmets.config import merge_config, read_yaml, validate_config

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "docs" / "paper-fidelity.md"
STATUSES = {"same", "keyed", "deviation"}
#: keys configs/paper.yaml sets that are not part of the method (how fast, not what)
NOT_METHOD = {"inference.batch_size", "data.split.fractions", "data.split.seed", "twostage.detector",
              "twostage.segmentor"}
#: sections of configs/paper.yaml whose every key must have a row
METHOD_SECTIONS = ("data.split", "training.segmentation", "training.detection", "training.augmentation",
                   "inference", "twostage")


def _rows() -> list[dict[str, str]]:
    lines = [line.strip() for line in TABLE.read_text().splitlines() if line.strip().startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["Item", "Paper", "Official code", "Key", "paper.yaml", "Status"], header
    rows = []
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == len(header), f"{TABLE.name}: a row has {len(cells)} cells: {line}"
        rows.append(dict(zip(header, cells)))
    return rows


def _code(cell: str) -> str | None:
    """The text inside a cell's backticks, or None for '-'."""
    if cell == "-":
        return None
    match = re.fullmatch(r"`([^`]+)`", cell)
    assert match, f"expected a `backticked` value or '-', got {cell!r}"
    return match.group(1)


def _lookup(config: dict, key: str):
    node = config
    for part in key.split("."):
        assert isinstance(node, dict) and part in node, f"{key}: not a key of the validated paper config"
        node = node[part]
    return node


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return a == b


def _leaves(node, prefix: str):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}.{key}")
    else:
        yield prefix


@pytest.fixture(scope="module")
def configs():
    default = read_yaml(REPO / "config.yaml")
    paper_raw = read_yaml(REPO / "configs" / "paper.yaml")
    paper = validate_config(merge_config(default, paper_raw), source="configs/paper.yaml")
    return validate_config(default, source="config.yaml"), paper, paper_raw


def test_every_row_matches_the_validated_paper_config(configs):
    default, paper, _ = configs
    rows = _rows()
    assert len(rows) > 50
    wrong = []
    for row in rows:
        item, status, key, value = row["Item"], row["Status"], _code(row["Key"]), _code(row["paper.yaml"])
        assert status in STATUSES, f"{item}: status {status!r}, expected one of {sorted(STATUSES)}"
        if status in ("keyed", "deviation"):
            assert key is not None, f"{item}: a {status} row must name the config key that sets it"
        assert (key is None) == (value is None), f"{item}: a key needs a paper.yaml value and a value a key"
        if key is None:
            continue
        actual = _lookup(paper, key)
        if not _same(actual, yaml.safe_load(value)):
            wrong.append(f"{item}: {key} is {actual!r} in configs/paper.yaml, the table says {value}")
        if status == "keyed" and _same(_lookup(default, key), actual):
            wrong.append(f"{item}: marked keyed, but config.yaml has the same {key} ({actual!r})")
    assert not wrong, "docs/paper-fidelity.md disagrees with configs/paper.yaml:\n" + "\n".join(wrong)


def test_every_method_key_of_the_paper_config_has_a_row(configs):
    _, _, paper_raw = configs
    named = {_code(row["Key"]) for row in _rows()}
    missing = []
    for section in METHOD_SECTIONS:
        node = _lookup(paper_raw, section) if section.split(".")[0] in paper_raw else {}
        missing += [k for k in _leaves(node, section) if k not in named and k not in NOT_METHOD]
    assert not missing, f"configs/paper.yaml sets method keys without a row in {TABLE.name}: {', '.join(missing)}"
