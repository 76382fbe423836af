"""Fixtures of the reliability tests: a small real cohort and a trained tiny model, once per session.

Every fault in this folder is injected into a real process (the `brainmets`
console script or `snakemake` on the project's Snakefile), each bounded by a
timeout. What only sets the stage (the cohort, a cache with a trained model) is
built here once, in this process, through the stage APIs.

The helpers (running processes, configs, waits) live in helpers.py. Tests are
imported with ``--import-mode=importlib`` (pyproject.toml), so a sibling module
is not importable by name: this conftest, which pytest always loads before the
test modules of its folder, registers helpers.py as ``reliability_helpers``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

_spec = importlib.util.spec_from_file_location("reliability_helpers", Path(__file__).with_name("helpers.py"))
helpers = importlib.util.module_from_spec(_spec)
sys.modules["reliability_helpers"] = helpers
_spec.loader.exec_module(helpers)

COHORT_SHAPE = helpers.COHORT_SHAPE
COHORT_SPACING = helpers.COHORT_SPACING
N_CASES = helpers.N_CASES
full_config = helpers.full_config


@pytest.fixture(scope="session")
def cohort(tmp_path_factory) -> Path:
    """Six synthetic cases in the BraTS-MET layout (real NIfTI files); tests copy it before breaking it."""
    from brainmets.data.synthetic.cohort import synthesize_cohort

    root = tmp_path_factory.mktemp("cohort") / "BraTS-MET"
    synthesize_cohort(root, N_CASES, seed=0, shape=COHORT_SHAPE, spacing=COHORT_SPACING, progress=False)
    return root


@pytest.fixture(scope="session")
def trained(cohort, tmp_path_factory) -> SimpleNamespace:
    """Indexed, split and cached cohort plus a tiny trained U-Net (T1c), built through the stage APIs.

    Attributes: root (folder), config (full config path), cases, splits, cache, run (run dir
    holding model.pt), subset.
    """
    from brainmets.config import load_config
    from brainmets.data.layout import index_cohort
    from brainmets.data.preprocess import SOURCE_KEYS, preprocess_cases
    from brainmets.data.splits import create_split
    from brainmets.io import write_table
    from brainmets.training.loop import RunRequest, train

    root = tmp_path_factory.mktemp("trained")
    cases = root / "cases.tsv"
    table = index_cohort(cohort, progress=False)
    write_table(table, cases)
    splits = root / "splits.tsv"
    create_split(cases, splits, fractions=(0.5, 0.25, 0.25), seed=0)
    cache = root / "cache"
    preprocess_cases({row["case"]: {k: row[k] for k in SOURCE_KEYS} for _, row in table.iterrows()}, cache,
                     progress=False)
    config = full_config(root / "config.yaml")
    run = root / "run"
    train(load_config(config), RunRequest("modality", "unet", "t1c", 0, cache, splits, run), progress=False)
    return SimpleNamespace(root=root, config=config, cases=cases, splits=splits, cache=cache, run=run,
                           subset="t1c")
