"""A typo in any config section stops `snakemake -n` and the CLI before any job, naming file and key.

Each case overrides the embedded config.yaml with one misspelt key (as a user's
`--configfile` does), in every top-level section, nested ones and a model entry
included: the real Snakefile must refuse it while parsing (no job planned, no
results written) and `brainmets train --config` must refuse it before reading
any input (exit 2, no run directory).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from brainmets.config import merge_config

REPO = Path(__file__).resolve().parents[2]
BRAINMETS = Path(sys.executable).parent / "brainmets"

#: (override merged over config.yaml, the key the message must name, a hint it must give)
TYPOS = {
    "top level": ({"seed": [0]}, "unknown config key seed", "did you mean seeds?"),
    "results": ({"results": ""}, "config key results", "should be non-empty"),
    "data": ({"data": {"split": {"fractionz": [0.6, 0.2, 0.2]}}}, "unknown config key data.split.fractionz",
             "did you mean data.split.fractions?"),
    "models": ({"models": {"unet": {"filterz": [8, 16, 32]}}}, "unknown config key models.unet.filterz",
               "did you mean models.unet.filters?"),
    "models arch": ({"models": {"segresnet": {"arch": "segresnett"}}}, "config key models.segresnet.arch",
                    "did you mean segresnet?"),
    "training": ({"training": {"detection": {"schedule": {"warmup_iteration": 10}}}},
                 "unknown config key training.detection.schedule.warmup_iteration",
                 "did you mean training.detection.schedule.warmup_iterations?"),
    "training augmentation": ({"training": {"augmentation": {"enable": True}}},
                              "unknown config key training.augmentation.enable",
                              "did you mean training.augmentation.enabled?"),
    "inference": ({"inference": {"overlapp": 0.5}}, "unknown config key inference.overlapp",
                  "did you mean inference.overlap?"),
    "reporting": ({"reporting": {"size_binz": [10, 100]}}, "unknown config key reporting.size_binz",
                  "did you mean reporting.size_bins?"),
    "modality_study": ({"modality_study": {"subset": "all"}}, "unknown config key modality_study.subset",
                       "did you mean modality_study.subsets?"),
    "selection": ({"selection": {"metrc": "lesion_dice"}}, "unknown config key selection.metrc",
                  "did you mean selection.metric?"),
    "twostage": ({"twostage": {"train_on_detectd": True}}, "unknown config key twostage.train_on_detectd",
                 "did you mean twostage.train_on_detected?"),
    "baselines": ({"baselines": {"model": ["resunet"]}}, "unknown config key baselines.model",
                  "did you mean baselines.models?"),
    "tracking": ({"tracking": {"urii": None}}, "unknown config key tracking.urii", "did you mean tracking.uri?"),
    "resources": ({"resources": {"train": {"thread": 2}}}, "unknown config key resources.train.thread",
                  "did you mean resources.train.threads?"),
}


@pytest.mark.parametrize("override, key, hint", TYPOS.values(), ids=TYPOS.keys())
def test_snakemake_dry_run_refuses_the_typo_before_any_job(snakemake, tmp_path, override, key, hint):
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump(override))
    run = snakemake("-n", "--configfile", str(typo))
    assert run.returncode != 0, run.output
    for needle in ("invalid configuration", str(typo), key, hint):
        assert needle in run.output, f"{needle!r} not in:\n{run.output}"
    assert "Job stats" not in run.output
    assert not (snakemake.workdir / "results").exists()


@pytest.mark.parametrize("override, key, hint", TYPOS.values(), ids=TYPOS.keys())
def test_cli_refuses_the_typo_before_reading_any_input(tmp_path, override, key, hint):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(merge_config(yaml.safe_load((REPO / "config.yaml").read_text()), override)))
    out = tmp_path / "run"
    proc = subprocess.run(
        [str(BRAINMETS), "train", "--config", str(config), "--study", "modality", "--model", "unet",
         "--subset", "t1c", "--seed", "0", "--cache", str(tmp_path / "no-cache"),
         "--splits", str(tmp_path / "no-splits.tsv"), "--out-dir", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in ("brainmets train: error: invalid configuration", str(config), key, hint):
        assert needle in proc.stderr, f"{needle!r} not in:\n{proc.stderr}"
    assert not out.exists()
