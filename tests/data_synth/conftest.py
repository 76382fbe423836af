"""Shared synthetic cases: generated once per session on reduced grids (and one full-size case)."""

from __future__ import annotations

import pytest

from brainmets.data.synthetic import generate_case

#: A 240 x 240 x 156 mm field of view at 2 mm and at 3 mm: the BraTS field at lower resolution.
GRID_2MM = ((120, 120, 78), 2.0)
GRID_3MM = ((80, 80, 52), 3.0)


@pytest.fixture(scope="session")
def grid_3mm():
    return GRID_3MM


@pytest.fixture(scope="session")
def cases_2mm():
    return [generate_case(i, 0, *GRID_2MM) for i in range(1, 11)]


@pytest.fixture(scope="session")
def cohort_3mm():
    """Forty patients of cohort seed 0, for distributions."""
    return [generate_case(i, 0, *GRID_3MM) for i in range(1, 41)]


@pytest.fixture(scope="session")
def full_case():
    return generate_case(1, 0)
