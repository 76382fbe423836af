"""`brainmets.parallel.parallel_map`: order, inline run, spawned workers, fail-fast errors naming the item.

The functions mapped are real library functions (picklable by name), because the
spawned workers cannot import this test module.
"""

from __future__ import annotations

import math
import os
from functools import partial
from pathlib import Path

import pytest

from brainmets.errors import BrainmetsError, CaseError
from brainmets.nifti import read_image
from brainmets.parallel import parallel_map

SELF_CMDLINE = Path("/proc/self/cmdline")


@pytest.mark.parametrize("workers", [1, 3])
def test_results_come_back_in_item_order(workers):
    items = [16.0, 1.0, 9.0, 4.0, 0.0, 25.0]
    assert parallel_map(math.sqrt, items, workers=workers, desc="roots", progress=False) == [
        4.0, 1.0, 3.0, 2.0, 0.0, 5.0]


def test_one_worker_runs_inline_and_more_run_in_spawned_processes():
    here = SELF_CMDLINE.read_bytes()
    inline = parallel_map(Path.read_bytes, [SELF_CMDLINE] * 2, workers=1, desc="cmdline", progress=False)
    assert inline == [here, here]
    # An unpicklable function is fine inline: nothing crosses a process boundary.
    assert parallel_map(lambda x: x + 1, [1, 2], workers=1, desc="inline", progress=False) == [2, 3]

    pooled = parallel_map(Path.read_bytes, [SELF_CMDLINE] * 2, workers=2, desc="cmdline", progress=False)
    for cmdline in pooled:
        # a forked worker would show this process's command line
        assert b"multiprocessing.spawn" in cmdline and cmdline != here


@pytest.mark.parametrize("workers", [1, 2])
def test_an_error_names_the_item_and_keeps_the_original(workers):
    with pytest.raises(RuntimeError, match=r"^roots failed on item -1.0: ValueError: math domain error$") as info:
        parallel_map(math.sqrt, [4.0, -1.0, 9.0], workers=workers, desc="roots", progress=False,
                     name=lambda x: f"item {x}")
    assert isinstance(info.value.__cause__, ValueError)


def test_the_earliest_failed_item_is_reported_whichever_worker_fails_first():
    items = [-1.0, -2.0, -3.0, -4.0]
    with pytest.raises(RuntimeError, match="on -1.0:"):
        parallel_map(math.sqrt, items, workers=2, desc="roots", progress=False)


def test_inline_run_stops_at_the_first_error(tmp_path):
    items = [tmp_path / "a", tmp_path / "missing" / "b", tmp_path / "c"]
    with pytest.raises(RuntimeError, match="mkdir failed on .*missing/b: FileNotFoundError"):
        parallel_map(os.mkdir, items, workers=1, desc="mkdir", progress=False)
    assert (tmp_path / "a").is_dir()
    assert not (tmp_path / "c").exists(), "an item after the failing one was run"


def test_pool_cancels_the_items_not_started_after_an_error(tmp_path):
    items = [tmp_path / "missing" / "first"] + [tmp_path / f"d{i}" for i in range(400)]
    with pytest.raises(RuntimeError, match="missing/first"):
        parallel_map(os.mkdir, items, workers=2, desc="mkdir", progress=False)
    made = len(list(tmp_path.glob("d*")))
    assert made < 400, "every item ran although the first one failed"


def test_a_case_error_from_a_worker_arrives_whole(tmp_path):
    paths = [tmp_path / "x-t2f.nii.gz", tmp_path / "y-t2f.nii.gz"]
    with pytest.raises(CaseError) as info:
        parallel_map(partial(read_image, "case-x", what="t2f"), paths, workers=2, desc="read", progress=False)
    err = info.value
    assert (err.case, err.file, err.problem) == ("case-x", str(paths[0]), "t2f file missing")
    assert str(err) == f"case-x: t2f file missing ({paths[0]})"  # names the item: not prefixed again


def test_a_user_error_that_does_not_name_its_item_is_prefixed_with_it():
    def write(item: int) -> None:
        if item == 3:
            raise BrainmetsError("no space left on the device")

    with pytest.raises(BrainmetsError, match=r"^case 3: no space left on the device$"):
        parallel_map(write, [1, 2, 3], workers=1, desc="write", progress=False, name=lambda i: f"case {i}")


def test_bad_worker_counts_and_no_items():
    with pytest.raises(BrainmetsError, match="workers must be at least 1, got 0"):
        parallel_map(math.sqrt, [1.0], workers=0, desc="roots", progress=False)
    assert parallel_map(math.sqrt, [], workers=4, desc="roots", progress=False) == []
