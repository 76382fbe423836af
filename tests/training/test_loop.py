"""The training loop end to end on tiny networks and cases: outputs, resume, train-on-detected."""

import json

import pandas as pd
import pytest
import torch
import yaml

from brainmets.config import validate_config, validate_model
from brainmets.decision import resolve_subset
from brainmets.errors import BrainmetsError
from brainmets.models import build_model, forward_outputs, load_trained, save_trained
from brainmets.training.loop import RunRequest, train
from brainmets.training.losses import region_targets, segmentation_loss
from brainmets.training.sampling import PatchSampler
from brainmets.training.schedules import build_optimizer
from brainmets.training.settings import training_settings


def request(tiny_data, out_dir, model="segmentor", **kw):
    cache, splits = tiny_data
    return RunRequest(study="modality", model=model, subset=kw.pop("subset", "t1c+t2f"), seed=kw.pop("seed", 0),
                      cache_dir=cache, splits=splits, out_dir=out_dir, **kw)


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_few_steps_lower_the_loss_on_a_fixed_batch(tiny_data, tiny_config):
    cache, _ = tiny_data
    torch.manual_seed(0)
    spec = tiny_config["models"]["segmentor"]
    model = build_model("segmentor", spec, 2, 3)
    batch = PatchSampler(cache, ["case-000", "case-003"], [1, 3], spec["patch"], batch_patients=2,
                         crops_per_patient=2, pos_fraction=1.0, task="segmentation", seed=0).batch(0)
    optimizer = build_optimizer(model.parameters(), training_settings(tiny_config).segmentation.optimizer)
    target = region_targets(batch.label)
    losses = []
    for _ in range(8):
        main, aux, extra = forward_outputs(model, batch.image)
        loss = segmentation_loss(main, aux, target, 0.5, extra)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05


def test_run_writes_its_files_and_a_rerun_does_nothing(tiny_data, tiny_config, tmp_path):
    out = tmp_path / "run"
    result = train(tiny_config, request(tiny_data, out), progress=False)
    assert result.status == "trained" and result.iteration == 6
    for name in ("config.yaml", "history.tsv", "checkpoint.pt", "model.pt", "best.pt"):
        assert (out / name).is_file(), name
    history = pd.read_csv(out / "history.tsv", sep="\t")
    assert history["iteration"].tolist() == [1, 2, 3, 4, 5, 6]
    assert {"loss", "lr", "seconds", "val_dice_WT", "val_dice_TC", "val_dice_ET", "val_score"} <= set(history)
    assert history["val_score"].notna().tolist() == [False, False, True, False, False, True]
    assert history["lr"].iloc[0] == 0.01 and history["lr"].is_monotonic_decreasing
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert (resolved["subset"], resolved["seed"], resolved["task"], resolved["in_channels"]) == ("t1c+t2f", 0, "segmentation", 2)
    assert resolved["model_spec"]["deep_supervision"] == 1
    model, info = load_trained(out / "model.pt")
    assert (info["subset"], info["iteration"], info["task"], info["out_channels"]) == ("t1c+t2f", 6, "segmentation", 3)
    size = json.loads((out / "model_info.json").read_text())
    assert size["parameters"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert size["gmac_per_window"] > 0 and size["patch"] == list(info["patch"]) and size["in_channels"] == 2
    assert model(torch.zeros(1, 2, 16, 16, 16)).shape == (1, 3, 16, 16, 16)
    chosen = json.loads((out / "checkpoints.json").read_text())
    best_info = load_trained(out / "best.pt")[1]
    assert chosen["best"]["iteration"] == best_info["iteration"] in (3, 6)
    assert chosen["best"]["score"] == best_info["val_score"] == history["val_score"].max()
    assert chosen["final"] == {"file": "model.pt", "iteration": 6, "score": history["val_score"].iloc[-1]}
    before = (out / "model.pt").stat().st_mtime_ns
    assert train(tiny_config, request(tiny_data, out), progress=False).status == "exists"
    assert (out / "model.pt").stat().st_mtime_ns == before


def test_without_validation_best_is_the_final_weights_and_says_so(tiny_data, tiny_config, tmp_path):
    tiny_config["training"]["val_every"] = 0
    out = tmp_path / "run"
    train(tiny_config, request(tiny_data, out, iterations=2), progress=False)
    assert_same_weights(weights(out / "best.pt"), weights(out / "model.pt"))
    chosen = json.loads((out / "checkpoints.json").read_text())
    assert chosen["best"] == {"file": "best.pt", "iteration": 2, "score": None,
                              "basis": "final weights: the run did not validate"}
    assert "val_score" not in pd.read_csv(out / "history.tsv", sep="\t")


def test_detector_validation_scores_f1_on_the_validation_windows(tiny_data, tiny_config, tmp_path):
    out = tmp_path / "det"
    train(tiny_config, request(tiny_data, out, "detector"), progress=False)
    history = pd.read_csv(out / "history.tsv", sep="\t").dropna(subset=["val_score"])
    # 36x36x28 cases in 16^3 windows at overlap 0.5: 4 x 4 x 3 windows each, 2 validation cases
    assert history["val_windows"].tolist() == [96, 96]
    assert history["val_score"].between(0, 1).all()
    precision, recall = history[["val_precision", "val_recall"]].iloc[-1]
    if precision > 0 and recall > 0:
        assert history["val_score"].iloc[-1] == pytest.approx(2 * precision * recall / (precision + recall))
    assert json.loads((out / "checkpoints.json").read_text())["metric"].startswith("F1")


@pytest.mark.parametrize("model, authors, precision",
                         [("segmentor", False, "auto"), ("detector", False, "auto"), ("segmentor", True, "auto"),
                          ("segmentor", False, "bf16")],
                         ids=["segmentor", "detector", "segmentor-authors-sampling", "segmentor-bf16"])
def test_resumed_run_ends_with_the_same_weights(tiny_data, tiny_config, tmp_path, model, authors, precision):
    if authors:  # negatives outside TC/ET, one joint affine, whole-volume augmentation (configs/paper.yaml)
        tiny_config["training"]["segmentation"].update(negative_centre="background", positive_region="tc_et")
        tiny_config["training"]["augmentation"].update(affine="joint", scope="volume")
    tiny_config["training"]["precision"] = precision  # bf16 autocast too resumes bit for bit
    whole = train(tiny_config, request(tiny_data, tmp_path / "whole", model), progress=False)
    part = train(tiny_config, request(tiny_data, tmp_path / "split", model), progress=False, stop_at=3)
    assert part.status == "stopped" and not (tmp_path / "split" / "model.pt").exists()
    rest = train(tiny_config, request(tiny_data, tmp_path / "split", model), progress=False)
    assert (whole.status, rest.status, rest.start_iteration) == ("trained", "trained", 3)
    assert_same_weights(weights(tmp_path / "whole" / "model.pt"), weights(tmp_path / "split" / "model.pt"))
    assert_same_weights(weights(tmp_path / "whole" / "best.pt"), weights(tmp_path / "split" / "best.pt"))
    a = pd.read_csv(tmp_path / "whole" / "history.tsv", sep="\t").drop(columns="seconds")
    b = pd.read_csv(tmp_path / "split" / "history.tsv", sep="\t").drop(columns="seconds")
    pd.testing.assert_frame_equal(a, b)


def test_resume_with_other_settings_is_refused(tiny_data, tiny_config, tmp_path):
    train(tiny_config, request(tiny_data, tmp_path / "run"), progress=False, stop_at=2)
    tiny_config["training"]["segmentation"]["optimizer"]["lr"] = 0.02
    with pytest.raises(BrainmetsError, match="different settings"):
        train(tiny_config, request(tiny_data, tmp_path / "run"), progress=False)


def test_train_on_detected_trains_only_on_accepted_crops(tiny_data, tiny_config, tmp_path, caplog):
    det = train(tiny_config, request(tiny_data, tmp_path / "det", "detector"), progress=False)
    assert det.status == "trained"
    caplog.set_level("INFO", logger="brainmets.training")
    out = tmp_path / "seg"
    result = train(tiny_config, request(tiny_data, out, detector=tmp_path / "det" / "best.pt", iterations=2),
                   progress=False)
    assert result.status == "trained"
    assert yaml.safe_load((out / "config.yaml").read_text())["train_on_detected"] is True
    history = pd.read_csv(out / "history.tsv", sep="\t")
    assert history["detector_seen"].tolist() == [4, 4]  # every crop of the 2 x 2 batch is scored
    assert history["detector_kept"].between(0, 4).all()
    assert "train-on-detected: the detector passed" in caplog.text
    with pytest.raises(BrainmetsError, match="same sequences"):
        train(tiny_config, request(tiny_data, tmp_path / "seg2", detector=tmp_path / "det" / "model.pt",
                                   subset="t1c"), progress=False)


def rejecting_detector(tiny_config, path):
    """A real detector model file whose classifier bias is so negative that it accepts no crop."""
    spec = tiny_config["models"]["detector"]
    model = build_model("detector", spec, 2, 1)
    with torch.no_grad():
        model.class_layers.out.bias.fill_(-1e6)
    save_trained(path, model, {"model_name": "detector", "spec": spec, "in_channels": 2, "out_channels": 1,
                               "subset": "t1c+t2f", "task": "detection", "patch": spec["patch"], "iteration": 0, "seed": 0})
    return path


def test_a_detector_that_rejects_everything_gives_zero_loss_steps(tiny_data, tiny_config, tmp_path, caplog):
    caplog.set_level("INFO", logger="brainmets.training")
    detector = rejecting_detector(tiny_config, tmp_path / "det" / "model.pt")
    torch.manual_seed(0)
    untouched = build_model("segmentor", tiny_config["models"]["segmentor"], 2, 3).state_dict()
    out = tmp_path / "seg"
    result = train(tiny_config, request(tiny_data, out, detector=detector, iterations=3), progress=False)
    assert result.status == "trained"
    history = pd.read_csv(out / "history.tsv", sep="\t")
    assert history["loss"].tolist() == [0.0, 0.0, 0.0]
    assert history["detector_kept"].tolist() == [0, 0, 0] and history["detector_seen"].tolist() == [4, 4, 4]
    assert history["zero_loss_steps"].tolist() == [1, 1, 1]
    assert history["lr"].is_monotonic_decreasing and history["lr"].iloc[-1] < 0.01  # the schedule still moves
    assert_same_weights(untouched, weights(out / "model.pt"))  # no step changed a weight
    assert "the detector accepted none of the 4 crops: zero loss, no update" in caplog.text
    assert "the detector passed 0 of 12 crops (0%); 3 steps had none" in caplog.text


def test_errors_name_the_problem(tiny_data, tiny_config, tmp_path):
    with pytest.raises(BrainmetsError, match="'nonet' is not in the config"):
        train(tiny_config, request(tiny_data, tmp_path / "a", "nonet"), progress=False)
    tiny_config["training"]["segmentation"]["crops"] = 3  # a typo: the config is refused before training
    with pytest.raises(BrainmetsError, match="unknown config key training.segmentation.crops"):
        validate_config(tiny_config)


def test_resolve_subset(tmp_path):
    (tmp_path / "modality.json").write_text('{"chosen_subset": "t1c+t1n+t2f"}')
    assert resolve_subset("t2f+t1c") == "t1c+t2f"
    assert resolve_subset("selected", tmp_path / "modality.json") == "t1c+t1n+t2f"
    assert resolve_subset(f"@{tmp_path / 'modality.json'}") == "t1c+t1n+t2f"
    with pytest.raises(BrainmetsError, match="--selection"):
        resolve_subset("selected")


def test_segresnetvae_trains_with_its_vae_loss(tiny_data, tiny_config, tmp_path):
    # its VAE term is added to the loss, and channels_last "auto" must keep it in NCDHW (its VAE head .view()s)
    tiny_config["models"]["vae"] = validate_model("vae", {"arch": "segresnetvae", "init_filters": 4, "blocks_down": [1, 1],
                                                          "blocks_up": [1], "vae_nz": 8, "patch": [16, 16, 16]})
    result = train(tiny_config, request(tiny_data, tmp_path / "vae", "vae", iterations=2), progress=False)
    assert result.status == "trained"
    assert pd.read_csv(tmp_path / "vae" / "history.tsv", sep="\t")["loss"].notna().all()
