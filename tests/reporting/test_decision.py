"""The modality decision file: one reader for training and reporting, clear errors for a bad file."""

from __future__ import annotations

import json
import re

import pytest

from brainmets.decision import read_selection, resolve_subset, selected_subset, selection_path, write_selection
from brainmets.errors import BrainmetsError


def test_written_decision_is_read_back_and_resolves_the_alias(tmp_path):
    path = write_selection({"chosen_subset": "t1c+t1n+t2f", "metric": "lesion_dice"}, selection_path(tmp_path))
    assert path == tmp_path / "selection" / "modality.json"
    assert read_selection(path)["metric"] == "lesion_dice"
    assert selected_subset(path) == "t1c+t1n+t2f"
    assert resolve_subset("selected", path) == resolve_subset(f"@{path}") == "t1c+t1n+t2f"
    assert resolve_subset("t2f + t1c") == "t1c+t2f"


@pytest.mark.parametrize("content, message", [
    (None, "modality decision file not found"),
    ("{not json", "is not valid JSON"),
    (json.dumps({"subset": "t1c"}), "has no 'chosen_subset'"),
    (json.dumps({"chosen_subset": "t2f+t1c"}), "chosen_subset 't2f+t1c': subset key 't2f+t1c' is not canonical"),
    (json.dumps({"chosen_subset": "t1c+dwi"}), "unknown modality 'dwi'"),
])
def test_bad_decision_files_are_named(tmp_path, content, message):
    path = tmp_path / "modality.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(BrainmetsError, match=re.escape(message)) as info:
        selected_subset(path)
    assert str(path) in str(info.value)


def test_selected_needs_the_decision_file():
    with pytest.raises(BrainmetsError, match="--subset selected needs --selection"):
        resolve_subset("selected")
