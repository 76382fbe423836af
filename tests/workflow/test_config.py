"""brainmets.config: the shipped configs validate; bad configs fail with messages naming key and fix."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from brainmets.config import (
    SCHEMA_PATH,
    ConfigError,
    load_config,
    merge_config,
    validate_config,
    write_resolved_config,
)
from brainmets.constants import ALL_FOUR, all_subsets
from brainmets.errors import BrainmetsError

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "config.yaml"
PAPER = REPO / "configs" / "paper.yaml"


def default_config() -> dict:
    return yaml.safe_load(DEFAULT.read_text())


def problems_of(config: dict) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    return str(info.value)


def test_default_config_resolves_the_whole_study():
    config = load_config(DEFAULT)
    assert config["modality_study"]["subsets"] == all_subsets()
    assert len(config["modality_study"]["subsets"]) == 15
    assert config["twostage"]["subsets"] == ["selected", ALL_FOUR]
    assert config["baselines"]["subset"] == ALL_FOUR
    assert config["seeds"] == [0, 1, 2]
    assert list(config["resources"]) == ["data", "train", "predict", "evaluate", "report"]
    assert config["data"]["synthetic"]["enabled"] is True


def test_default_test_split_is_large_enough_for_a_significant_paired_test():
    """Tables compare models with the exact paired Wilcoxon test on the test cases: with 5 or fewer
    pairs its smallest two-sided p is >= 0.0625, so no difference could ever be significant."""
    from brainmets.data.splits import split_sizes
    from brainmets.reporting.stats import wilcoxon_smallest_p
    from brainmets.reporting.tables import ALPHA

    data = load_config(DEFAULT)["data"]
    train, val, test = split_sizes(data["synthetic"]["n_cases"], data["split"]["fractions"])
    assert test >= 6 and wilcoxon_smallest_p(test) < ALPHA
    assert val >= 4  # the subset selection and postprocessing choices are made on val


def test_paper_config_merged_over_default_is_valid_and_paper_sized():
    config = validate_config(merge_config(default_config(), yaml.safe_load(PAPER.read_text())), source=str(PAPER))
    assert config["data"]["synthetic"]["enabled"] is False
    assert config["data"]["split"]["fractions"] == [0.85, 0.05, 0.10]
    assert config["models"]["unet"]["patch"] == [128, 128, 128]
    assert config["models"]["unet"]["filters"] == [32, 64, 128, 256, 320]
    assert config["models"]["segmentor"]["patch"] == [64, 64, 64]
    assert config["training"]["segmentation"]["iterations"] == 250_000
    # the merge must not leave CPU-default keys behind in the paper's optimiser
    assert "betas" not in config["training"]["segmentation"]["optimizer"]
    assert config["training"]["detection"]["iterations"] == 400 * 101
    assert len(config["baselines"]["models"]) == 12  # 11 paper rows + nnU-Net ResEnc
    # the default's small-component removal is not the paper's
    assert config["postprocessing"]["min_volume_mm3"] == {"WT": 0, "TC": 0, "ET": 0}
    assert load_config(DEFAULT)["postprocessing"]["min_volume_mm3"]["WT"] > 0


def test_paper_training_and_inference_settings_are_built_from_the_validated_config():
    from brainmets.inference import InferenceSettings
    from brainmets.training.settings import training_settings

    config = validate_config(merge_config(default_config(), yaml.safe_load(PAPER.read_text())))
    settings = training_settings(config)
    assert settings.segmentation.optimizer.name == "sgd"
    assert settings.segmentation.batch_size == 10
    assert settings.detection.schedule.warmup_iterations == 1010
    assert settings.augmentation.enabled and settings.augmentation.rotate_prob == 0.2
    assert InferenceSettings.from_config(config).overlap == 0.5
    default = load_config(DEFAULT)
    assert training_settings(default).segmentation.iterations < 1000
    assert InferenceSettings.from_config(default).batch_size == 8


MINIMAL_MODELS = {"unet": {"arch": "dynunet", "patch": [128] * 3}, "detector": {"arch": "densenet121", "patch": [64] * 3},
                  "segmentor": {"arch": "dynunet", "patch": [64] * 3}}


def test_resources_left_out_come_from_the_schema_per_kind_and_key():
    config = validate_config({"models": copy.deepcopy(MINIMAL_MODELS),
                              "resources": {"train": {"runtime": 7}, "evaluate": {"gpu": 1}}})
    assert config["resources"] == {
        "train": {"runtime": 7, "threads": 1, "mem_mb": 4000, "gpu": 0},
        "evaluate": {"gpu": 1, "threads": 1, "mem_mb": 4000, "runtime": 30},
        "data": {"threads": 2, "mem_mb": 4000, "runtime": 60},
        "predict": {"threads": 1, "mem_mb": 4000, "runtime": 30, "gpu": 0},
        "report": {"threads": 1, "mem_mb": 4000, "runtime": 30},
    }
    with pytest.raises(ConfigError, match="resources.train.threads"):
        validate_config({"models": copy.deepcopy(MINIMAL_MODELS), "resources": {"train": {"threads": 0}}})


def test_minimal_config_gets_schema_defaults():
    config = validate_config({"models": copy.deepcopy(MINIMAL_MODELS)})
    assert config["results"] == "results"
    assert config["data"]["split"]["fractions"] == [0.6, 0.2, 0.2]
    assert config["data"]["preprocess_jobs"] == "single"
    assert config["selection"] == {"metric": "lesion_dice", "split": "val", "allow_test": False,
                                   "regions": ["WT", "TC", "ET"], "override": None}
    assert config["resources"]["train"] == {"threads": 1, "mem_mb": 4000, "runtime": 60, "gpu": 0}
    assert config["training"]["segmentation"]["iterations"] == 250_000
    assert config["inference"]["overlap"] == 0.5 and config["reporting"]["size_bins"] == [10.0, 100.0, 1000.0]
    assert config["models"]["unet"]["filters"] == [32, 64, 128, 256, 320]
    assert config["models"]["detector"]["task"] == "detection" and config["models"]["unet"]["task"] == "segmentation"
    # only the chosen architecture's keys are filled in
    assert "init_features" not in config["models"]["unet"] and "filters" not in config["models"]["detector"]
    # defaults are copies: filling one config must not change the schema's defaults
    config["selection"]["regions"].append("NETC")
    config["models"]["unet"]["filters"].append(512)
    again = validate_config({"models": copy.deepcopy(MINIMAL_MODELS)})
    assert again["selection"]["regions"] == ["WT", "TC", "ET"]
    assert again["models"]["unet"]["filters"] == [32, 64, 128, 256, 320]


def test_subsets_are_canonicalised_in_any_spelling():
    config = default_config()
    config["modality_study"]["subsets"] = ["t2f+t1c", ["t1n", "t1c"], "t1c"]
    config["baselines"]["models"] = ["resunet"]  # the reused 3D-UNET row would need all four above
    config["twostage"]["subsets"] = ["all", "t2f + t1n + t1c", "selected"]
    config["selection"]["override"] = ["t2f", "t1n", "t1c"]
    validate_config(config)
    assert config["modality_study"]["subsets"] == ["t1c+t2f", "t1c+t1n", "t1c"]
    assert config["twostage"]["subsets"] == [ALL_FOUR, "t1c+t1n+t2f", "selected"]
    assert config["selection"]["override"] == "t1c+t1n+t2f"


def test_unknown_modality_names_the_key_and_the_allowed_names():
    config = default_config()
    config["modality_study"]["subsets"] = ["t1c", "t1c+flair"]
    message = problems_of(config)
    assert "modality_study.subsets[1]" in message
    assert "'flair'" in message
    assert "t1n, t1c, t2w, t2f" in message


def test_fractions_must_sum_to_one():
    config = default_config()
    config["data"]["split"]["fractions"] = [0.7, 0.2, 0.2]
    message = problems_of(config)
    assert "data.split.fractions" in message and "sums to 1.1" in message


def test_fraction_out_of_range_and_wrong_count():
    config = default_config()
    config["data"]["split"]["fractions"] = [1.2, -0.1, -0.1]
    message = problems_of(config)
    assert "data.split.fractions[0]" in message and "data.split.fractions[1]" in message
    config["data"]["split"]["fractions"] = [0.8, 0.2]
    assert "too short" in problems_of(config)


def test_unknown_baseline_model_lists_the_defined_models():
    config = default_config()
    config["baselines"]["models"] = ["resunet", "segresnett"]
    message = problems_of(config)
    assert "baselines.models[1]" in message
    assert "did you mean 'segresnet'" in message
    assert "defined models:" in message and "unet" in message


def test_unknown_model_in_precision_by_model():
    config = default_config()
    config["training"]["precision_by_model"] = {"resunett": "fp32"}
    message = problems_of(config)
    assert "training.precision_by_model.resunett names model 'resunett'" in message
    assert "did you mean 'resunet'" in message


def test_unknown_model_in_pos_fraction_by_model():
    config = default_config()
    config["training"]["pos_fraction_by_model"] = {"segmentr": 0.5}
    message = problems_of(config)
    assert "training.pos_fraction_by_model.segmentr names model 'segmentr'" in message
    assert "did you mean 'segmentor'" in message


def test_unknown_twostage_and_modality_models():
    config = default_config()
    config["twostage"]["detector"] = "yolo"
    config["modality_study"]["model"] = "nnunet"
    message = problems_of(config)
    assert "twostage.detector names model 'yolo'" in message
    assert "modality_study.model names model 'nnunet'" in message


def test_misspelt_key_gets_a_suggestion():
    config = default_config()
    config["selection"]["metrc"] = "lesion_dice"
    message = problems_of(config)
    assert "unknown config key selection.metrc" in message
    assert "did you mean selection.metric?" in message


@pytest.mark.parametrize("mutate, expected", [
    (lambda c: c["models"]["unet"].update(filterz=[8, 16]),
     ["unknown config key models.unet.filterz (did you mean models.unet.filters?)", "allowed keys here: arch,"]),
    (lambda c: c["models"]["detector"].update(arch="densenet"),
     ["config key models.detector.arch is 'densenet'", "densenet121", "did you mean"]),
    (lambda c: c["models"]["unet"].update(task="segmentaton"),
     ["config key models.unet.task is 'segmentaton'; allowed: segmentation, detection (did you mean segmentation?)"]),
    (lambda c: c["models"]["segresnet"].update(blocks_down="1,1"),
     ["config key models.segresnet.blocks_down: '1,1' is not of type 'array'"]),
    (lambda c: c["training"]["segmentation"]["optimizer"].update(lrr=0.1),
     ["unknown config key training.segmentation.optimizer.lrr (did you mean training.segmentation.optimizer.lr?)"]),
    (lambda c: c["training"]["augmentation"].update(mirror_prob=2),
     ["config key training.augmentation.mirror_prob: 2 is greater than the maximum of 1"]),
    (lambda c: c["inference"].update(blend="gauss"),
     ["config key inference.blend is 'gauss'; allowed: constant, gaussian (did you mean gaussian?)"]),
    (lambda c: c["reporting"].update(detection_region=["WT"]),
     ["unknown config key reporting.detection_region (did you mean reporting.detection_regions?)"]),
], ids=["model key", "model arch", "model task", "model value", "optimizer key", "augmentation value", "inference value",
        "reporting key"])
def test_every_section_is_checked_by_the_schema(mutate, expected):
    config = default_config()
    mutate(config)
    message = problems_of(config)
    for needle in expected:
        assert needle in message


def test_wrong_enum_lists_the_allowed_values():
    config = default_config()
    config["selection"]["metric"] = "dice"
    message = problems_of(config)
    assert "selection.metric is 'dice'" in message and "lesion_dice" in message


def test_choosing_on_test_needs_allow_test():
    config = default_config()
    config["selection"]["split"] = "test"
    assert "selection.allow_test: true" in problems_of(config)
    config = default_config()
    config["selection"].update(split="test", allow_test=True)
    assert validate_config(config)["selection"]["split"] == "test"


def test_every_problem_is_reported_at_once():
    config = default_config()
    config["data"]["split"]["fractions"] = [0.5, 0.2, 0.2]
    config["baselines"]["models"] = ["nope"]
    config["twostage"]["subsets"] = ["selected", "t9"]
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    assert len(info.value.problems) == 3


def test_real_data_needs_a_root():
    config = default_config()
    config["data"]["synthetic"]["enabled"] = False
    assert "data.root is not set" in problems_of(config)


def test_load_config_errors_name_the_file(tmp_path):
    with pytest.raises(BrainmetsError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(BrainmetsError, match="not valid YAML"):
        load_config(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump({**default_config(), "seeds": [0, 0]}))
    with pytest.raises(ConfigError, match=str(wrong)):
        load_config(wrong)


def test_load_config_overrides_merge_deeply():
    config = load_config(DEFAULT, overrides={"data": {"split": {"seed": 7}}, "seeds": [3]})
    assert config["data"]["split"]["seed"] == 7
    assert config["data"]["split"]["fractions"] == default_config()["data"]["split"]["fractions"]
    assert config["seeds"] == [3]


def test_resolved_config_round_trips_and_is_not_rewritten_when_unchanged(tmp_path):
    config = load_config(DEFAULT)
    path = tmp_path / "config.resolved.yaml"
    assert write_resolved_config(config, path) is True
    assert write_resolved_config(copy.deepcopy(config), path) is False
    assert load_config(path) == config


def test_schema_ships_in_the_package_and_the_workflow_links_to_it():
    assert SCHEMA_PATH.is_file()
    link = REPO / "workflow" / "schemas" / "config.schema.yaml"
    assert link.is_symlink()
    assert link.resolve() == SCHEMA_PATH.resolve()
    pyproject = (REPO / "pyproject.toml").read_text()
    assert "schemas/*.yaml" in pyproject, "the schema must be package data so installed copies find it"


def test_table2_3d_unet_row_is_the_modality_run_and_needs_its_subset():
    from brainmets.config import trained_baselines

    config = load_config(DEFAULT)
    assert "unet" in config["baselines"]["models"] and "unet" not in trained_baselines(config)
    bad = default_config()
    bad["modality_study"]["subsets"] = ["t1c", "t1c+t2f"]
    assert "names the modality study's model 'unet'" in problems_of(bad)
    bad["baselines"]["models"] = ["resunet", "segresnet"]
    validate_config(bad)  # without the reused row, any modality subsets will do


def test_readme_names_the_default_table2_rows():
    from brainmets.reporting.collect import model_display_name

    rows = [model_display_name(m) for m in load_config(DEFAULT)["baselines"]["models"]]
    assert rows == ["ResUNet", "3D U-Net", "SegResNet"]
    readme = " ".join((REPO / "README.md").read_text().split())
    assert "ResUNet (pytorch-3dunet's ResidualUNet3D) and SegResNet (MONAI's SegResNetDS" in readme
    assert "the 3D-UNET row, which is the modality study's all-four run reused" in readme


def test_inference_window_is_checked_against_every_single_pass_network():
    config = default_config()
    config["inference"]["windw"] = 2
    assert "unknown config key inference.windw (did you mean inference.window?)" in problems_of(config)
    for window in ("large", [48, 48], 0):
        config = default_config()
        config["inference"]["window"] = window
        assert f"config key inference.window is {window!r}; expected the window of single-pass" in problems_of(config)
    for window, needle in (([16, 24, 24], "window [16, 24, 24] is smaller than the patch on some axis"),
                           ([48, 48, 50], "window [48, 48, 50] must be divisible by 4 on every axis")):
        config = default_config()
        config["inference"]["window"] = window
        message = problems_of(config)
        assert f"config key inference.window {window!r} for model 'unet' (arch dynunet, patch [24, 24, 24])" in message
        assert needle in message
    # a transformer keeps its patch: named when it predicts single-pass, as a Table 2 row
    config = default_config()
    config["inference"]["window"] = 2
    config["baselines"]["models"] = ["resunet", "unet", "swinunetr", "unetr"]
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    assert info.value.problems == [
        "config key inference.window 2 for model 'swinunetr' (arch swinunetr, patch [64, 32, 32]): this "
        "architecture takes only windows of its patch; use inference.window: null (or the patch itself)",
        "config key inference.window 2 for model 'unetr' (arch unetr, patch [32, 32, 32]): this "
        "architecture takes only windows of its patch; use inference.window: null (or the patch itself)",
    ]
    # the convolutional networks of the default study take a multiple of their patch or one window for the volume
    for window in (None, 2, [120, 120, 80]):
        config = default_config()
        config["inference"]["window"] = window
        assert validate_config(config)["inference"]["window"] == window
