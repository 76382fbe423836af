"""Registry: every architecture builds, runs forward and backward on 1, 3 and 4 channels."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch

from brainmets.config import ConfigError, load_schema, validate_model
from brainmets.errors import BrainmetsError
from brainmets.models import (
    ARCHITECTURES,
    ChannelAdapter,
    build_model,
    count_parameters,
    forward_outputs,
    load_trained,
    model_flops,
    save_trained,
)


def _load_tiny_specs() -> dict:
    spec = importlib.util.spec_from_file_location("tiny_specs", Path(__file__).with_name("tiny_specs.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # registry entries as the config validator hands them to build_model: defaults filled
    return {name: validate_model(name, entry) for name, entry in module.TINY_SPECS.items()}


TINY_SPECS = _load_tiny_specs()


def test_tiny_specs_cover_every_architecture():
    archs = {s["arch"] for s in TINY_SPECS.values()}
    assert archs == set(ARCHITECTURES)


def test_schema_and_registry_know_the_same_architectures():
    defs = load_schema()["$defs"]
    in_schema = set()
    for branch in defs["model"]["oneOf"]:
        arch = defs[branch["$ref"].split("/")[-1]]["properties"]["arch"]
        in_schema |= {arch["const"]} if "const" in arch else set(arch["enum"])
    assert in_schema == set(ARCHITECTURES)


@pytest.mark.parametrize("in_channels", [1, 3, 4])
@pytest.mark.parametrize("name", sorted(TINY_SPECS))
def test_forward_backward(name, in_channels):
    torch.manual_seed(0)
    spec = TINY_SPECS[name]
    out_channels = 1 if name == "detector" else 3
    model = build_model(name, spec, in_channels, out_channels).train()
    x = torch.randn(2, in_channels, *spec["patch"])
    main, aux, extra = forward_outputs(model, x)
    expected = (2, out_channels) if name == "detector" else (2, out_channels, *spec["patch"])
    assert tuple(main.shape) == expected
    for head in aux:
        assert head.shape == main.shape
    loss = main.float().pow(2).mean() + sum(h.pow(2).mean() for h in aux)
    if extra is not None:
        loss = loss + extra
    loss.backward()
    params = [p for p in model.parameters() if p.requires_grad]
    # gradients reach the input layer and the output layer (MONAI's UNETR / SegResNetVAE
    # hold a few parameters their forward never uses, so not every parameter has one)
    assert params[0].grad is not None and params[-1].grad is not None
    grads = [p.grad for p in params if p.grad is not None]
    assert all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    # eval mode: the main head only, same shape, no extra loss
    model.eval()
    with torch.no_grad():
        main_eval, aux_eval, extra_eval = forward_outputs(model, x[:1])
    assert tuple(main_eval.shape) == (1, *expected[1:])
    assert aux_eval == [] and extra_eval is None


@pytest.mark.parametrize("arch", ["resunet3d", "resunetse3d", "mlp_unext", "resenc_unet"])
def test_convolutional_networks_accept_channels_last_input(arch):
    """Training uses channels_last_3d for convolutional networks: same logits in either memory format."""
    spec = TINY_SPECS[arch]
    torch.manual_seed(0)
    model = build_model(arch, spec, 3, 3).eval()
    x = torch.randn(2, 3, *spec["patch"])
    with torch.no_grad():
        plain, _, _ = forward_outputs(model, x)
        last, _, _ = forward_outputs(model.to(memory_format=torch.channels_last_3d),
                                     x.to(memory_format=torch.channels_last_3d))  # fmt: skip
    torch.testing.assert_close(last, plain, rtol=1e-4, atol=1e-5)


def test_segmentor_has_three_heads_in_train_mode():
    model = build_model("segmentor", TINY_SPECS["segmentor"], 4, 3).train()
    _, aux, _ = forward_outputs(model, torch.randn(1, 4, 16, 16, 16))
    assert len(aux) == 2  # main + 2 = the paper's 3 deep-supervision heads


def test_segresnetvae_reports_its_vae_loss():
    model = build_model("segresnetvae", TINY_SPECS["segresnetvae"], 3, 3).train()
    _, _, extra = forward_outputs(model, torch.randn(1, 3, 16, 16, 16))
    assert extra is not None and extra.ndim == 0 and torch.isfinite(extra)


def test_vnet_adapts_three_channels_only():
    assert isinstance(build_model("vnet", TINY_SPECS["vnet"], 3, 3), ChannelAdapter)
    assert not isinstance(build_model("vnet", TINY_SPECS["vnet"], 4, 3), ChannelAdapter)


@pytest.mark.parametrize(
    "name, patch, match",
    [
        ("swinunetr", [48, 64, 64], "divisible by 32"),
        ("swinunetr", [32, 32, 32], "one voxel"),
        ("unetr", [20, 16, 16], "divisible by 16"),
        ("unet", [18, 16, 16], "divisible by 4"),
        ("vnet", [24, 16, 16], "divisible by 16"),
    ],
)
def test_bad_patch_is_a_clear_error(name, patch, match):
    with pytest.raises(BrainmetsError, match=match):
        build_model(name, {**TINY_SPECS[name], "patch": patch}, 4, 3)


def test_unknown_arch_and_keys_are_config_errors():
    with pytest.raises(ConfigError, match="models.x.arch is 'resnet9000'; allowed: dynunet, densenet121"):
        validate_model("x", {"arch": "resnet9000", "patch": [16, 16, 16]})
    with pytest.raises(ConfigError, match="models.x.arch is 'unet'.*did you mean monai_unet"):
        validate_model("x", {"arch": "unet", "patch": [16, 16, 16]})
    with pytest.raises(ConfigError, match=r"unknown config key models.x.filtres \(did you mean models.x.filters\?\)"):
        validate_model("x", {"arch": "dynunet", "filtres": [4, 8], "patch": [16, 16, 16]})
    with pytest.raises(ConfigError, match="models.x: 'patch' is a required property"):
        validate_model("x", {"arch": "dynunet", "filters": [4, 8]})
    with pytest.raises(ConfigError, match="models.x.features: .* is too short"):
        validate_model("x", {"arch": "basicunet", "features": [4, 4], "patch": [32] * 3})
    with pytest.raises(BrainmetsError, match="deep_supervision=3"):
        build_model("x", {**TINY_SPECS["unet"], "deep_supervision": 3}, 4, 3)


def test_defaults_come_from_the_schema():
    assert validate_model("d", {"arch": "dynunet", "patch": [128] * 3})["filters"] == [32, 64, 128, 256, 320]
    detector = validate_model("d", {"arch": "densenet121", "patch": [64] * 3})
    assert (detector["task"], detector["block_config"], detector["dropout"]) == ("detection", [6, 12, 24, 16], 0.2)


def test_paper_unet_is_478_gmac_and_two_stage_networks_60_and_7():
    """The paper's per-window GFLOPs are GMACs of exactly these networks (counted on the meta device)."""
    unet_spec = validate_model("unet", {"arch": "dynunet", "filters": [32, 64, 128, 256, 320], "patch": [128] * 3})
    unet = build_model("unet", unet_spec, 4, 3)
    assert model_flops(unet, 4, [128] * 3) / 2e9 == pytest.approx(478.1, rel=2e-3)
    segmentor_spec = validate_model("segmentor", {"arch": "dynunet", "residual": True, "deep_supervision": 2,
                                                  "patch": [64] * 3})
    segmentor = build_model("segmentor", segmentor_spec, 4, 3)
    assert model_flops(segmentor, 4, [64] * 3) / 2e9 == pytest.approx(59.9, rel=2e-3)
    detector = build_model("detector", validate_model("detector", {"arch": "densenet121", "patch": [64] * 3}), 3, 1)
    assert model_flops(detector, 3, [64] * 3) / 2e9 == pytest.approx(6.8, rel=2e-3)
    assert count_parameters(detector) > 11_000_000


def test_model_flops_scales_with_volume_and_leaves_model_usable():
    model = build_model("unet", TINY_SPECS["unet"], 4, 3)
    small, big = model_flops(model, 4, [16] * 3), model_flops(model, 4, [32] * 3)
    assert small > 0 and big == pytest.approx(8 * small, rel=1e-6)
    assert next(model.parameters()).device.type == "cpu"


def _info(name: str, in_channels: int = 3) -> dict:
    return {
        "model_name": name,
        "spec": TINY_SPECS[name],
        "in_channels": in_channels,
        "out_channels": 3,
        "subset": "t1c+t1n+t2f",
        "task": "segmentation",
        "patch": TINY_SPECS[name]["patch"],
        "iteration": 7,
        "seed": 0,
    }


@pytest.mark.parametrize("name", ["segmentor", "vnet", "segresnetvae"])
def test_save_load_round_trip_gives_identical_outputs(tmp_path, name):
    torch.manual_seed(1)
    model = build_model(name, TINY_SPECS[name], 3, 3).eval()
    path = tmp_path / "run" / "model.pt"
    save_trained(path, model, _info(name))
    loaded, info = load_trained(path, "cpu")
    assert info == _info(name)
    assert not loaded.training
    x = torch.randn(1, 3, *TINY_SPECS[name]["patch"])
    with torch.no_grad():
        assert torch.equal(forward_outputs(model, x)[0], forward_outputs(loaded, x)[0])
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temp file left behind


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(BrainmetsError, match="not found.*missing.pt"):
        load_trained(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(BrainmetsError, match="cannot read trained model .*corrupt.pt"):
        load_trained(corrupt)
    foreign = tmp_path / "checkpoint.pt"
    torch.save({"model": {}, "iteration": 3}, foreign)
    with pytest.raises(BrainmetsError, match="not a brainmets trained-model file"):
        load_trained(foreign)
    with pytest.raises(BrainmetsError, match="lacks seed"):
        save_trained(tmp_path / "m.pt", torch.nn.Linear(1, 1), {k: v for k, v in _info("unet").items() if k != "seed"})
    # a model file is input: its stored registry entry is validated like a config's (here: the old arch name)
    renamed = tmp_path / "old.pt"
    save_trained(renamed, torch.nn.Linear(1, 1), {**_info("resunet"), "spec": {**TINY_SPECS["resunet"], "arch": "unet"}})
    with pytest.raises(ConfigError, match="(?s)" + re.escape(f"model file {renamed}") + ".*models.resunet.arch is 'unet'"):
        load_trained(renamed)


def test_every_model_of_the_default_config_builds():
    """The embedded config.yaml's registry entries are valid for this registry (as jobs will build them)."""
    config_path = Path(__file__).parents[2] / "config.yaml"
    if not config_path.is_file():
        pytest.skip("no config.yaml in this checkout")
    from brainmets.config import load_config

    for name, spec in load_config(config_path)["models"].items():
        out_channels = 1 if spec["task"] == "detection" else 3
        model = build_model(name, spec, 3, out_channels)
        assert model_flops(model, 3, spec["patch"]) > 0
