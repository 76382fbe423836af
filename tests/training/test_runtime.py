"""The runtime shared by training and inference: device choice, autocast, memory format."""

import re

import pytest
import torch

from brainmets.cli import build_parser
from brainmets.cli import main as cli_main
from brainmets.config import ConfigError, validate_model, validate_section
from brainmets.errors import BrainmetsError
from brainmets.inference import InferenceSettings, inference_runtime
from brainmets.runtime import Runtime, bf16_gradient_faults, cpu_flags, cpu_runs_bf16_natively, resolve_device

CUDA = torch.cuda.is_available()
#: the allowed values as the schema's $defs/device describes them
ALLOWED = re.escape("expected auto (CUDA when available), cpu, cuda or cuda:N")


def inference_settings(**keys) -> InferenceSettings:
    return InferenceSettings(**validate_section("inference", keys))


def test_device_choice():
    assert resolve_device("auto") == torch.device("cuda" if CUDA else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("section", ["training", "inference"])
@pytest.mark.parametrize("value", ["gpu", "mps", "cuda:x"])
def test_a_device_the_schema_does_not_allow_is_refused_naming_key_and_values(section, value):
    with pytest.raises(ConfigError, match=rf"config key {section}.device is '{re.escape(value)}'; {ALLOWED}"):
        validate_section(section, {"device": value})
    assert validate_section(section, {"device": "cuda:1"})["device"] == "cuda:1"


@pytest.mark.parametrize("verb", ["segment", "predict"])
def test_a_bad_device_flag_stops_the_verb_before_any_work(tmp_path, capsys, verb):
    out = tmp_path / "out"
    if verb == "segment":
        args = ["segment", str(tmp_path / "cases"), "--model", str(tmp_path / "run"), "--out", str(out), "--device"]
    else:
        args = ["predict", "--config", str(tmp_path / "c.yaml"), "--model", str(tmp_path / "model.pt"),
                "--cache", str(tmp_path / "cache"), "--splits", str(tmp_path / "s.tsv"), "--split", "val",
                "--out-dir", str(out), "--device"]
    assert build_parser().parse_args([*args, "cuda:1"]).device == "cuda:1"
    with pytest.raises(SystemExit) as stop:
        cli_main([*args, "gpu"])
    assert stop.value.code == 2
    assert re.search(rf"argument --device: config key inference.device is 'gpu'; {ALLOWED}", capsys.readouterr().err)
    assert not out.exists()


def test_cuda_asked_for_but_absent_is_an_error_naming_the_setting():
    # without CUDA any CUDA device is absent; with it, the device after the last one
    missing = f"cuda:{torch.cuda.device_count()}" if CUDA else "cuda"
    with pytest.raises(BrainmetsError, match=rf"inference.device is '{missing}' but"):
        resolve_device(missing, "inference.device")


def test_autocast_is_bf16_on_cuda_and_nothing_on_the_cpu():
    runtime = Runtime.create("auto")
    x = runtime.inputs(torch.randn(2, 8))
    with runtime.autocast():
        y = torch.nn.functional.linear(x, torch.randn(4, 8, device=runtime.device))
    assert y.dtype == (torch.bfloat16 if CUDA else torch.float32)
    cpu = Runtime.create("cpu")
    with cpu.autocast():
        assert torch.nn.functional.linear(torch.randn(2, 8), torch.randn(4, 8)).dtype == torch.float32


@pytest.mark.parametrize("value, expected", [("auto", "auto"), (True, True), ("true", True), (False, False),
                                             ("false", False)])
def test_channels_last_setting(value, expected):
    for auto in (True, False):
        runtime = Runtime.create("cpu", value, auto_on_cpu=auto, auto_on_cuda=not auto)
        assert runtime.channels_last is (auto if expected == "auto" else expected)


def test_channels_last_inputs_and_models():
    runtime = Runtime.create("cpu", True)
    x = runtime.inputs(torch.randn(1, 2, 4, 4, 4))
    assert x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous()
    conv = runtime.place(torch.nn.Conv3d(2, 3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    plain = Runtime.create("cpu", False)
    assert plain.inputs(torch.randn(1, 2, 4, 4, 4)).is_contiguous()
    with pytest.raises(BrainmetsError, match="training.channels_last must be auto, true or false, got 'yes'"):
        Runtime.create("cpu", "yes", section="training")


def test_inference_uses_channels_last_on_cuda_only_by_default():
    runtime = inference_runtime(inference_settings(device="cpu"))
    assert (runtime.device, runtime.channels_last) == (torch.device("cpu"), False)
    assert inference_runtime(inference_settings(device="cpu", channels_last=True)).channels_last is True
    assert inference_runtime(inference_settings()).channels_last is CUDA


@pytest.mark.parametrize("section", ["training", "inference"])
def test_a_precision_the_schema_does_not_allow_is_refused_naming_key_and_values(section):
    with pytest.raises(ConfigError, match=rf"{section}.precision.*fp16"):
        validate_section(section, {"precision": "fp16"})
    assert validate_section(section, {})["precision"] == "auto"
    assert validate_section(section, {"precision": "native_bf16"})["precision"] == "native_bf16"
    with pytest.raises(BrainmetsError, match=f"{section}.precision must be one of auto, native_bf16, bf16, fp32, "
                                             "got 'fp16'"):
        Runtime.create("cpu", precision="fp16", section=section)


@pytest.mark.parametrize("flags, native", [
    ("flags\t\t: fpu vme avx512f avx512_bf16 avx512vl", True),
    ("fpu sse4_2 amx_bf16 amx_tile", True),
    ("flags\t\t: fpu avx2 avx512f avx512vl avx512_vnni", False),  # AVX-512 without its bf16 instructions
    ("flags\t\t: fpu avx512_bf16x", False),
    ("", False),
])
def test_native_bf16_is_read_from_the_cpu_flags(flags, native):
    assert cpu_runs_bf16_natively(flags) is native


def test_precision_choices_on_the_cpu():
    assert Runtime.create("cpu").bf16 is False  # auto: plain fp32 on the CPU, as before the setting existed
    assert Runtime.create("cpu", precision="fp32").bf16 is False
    assert Runtime.create("cpu", precision="bf16").bf16 is True
    native = Runtime.create("cpu", precision="native_bf16")
    assert native.bf16 is cpu_runs_bf16_natively(cpu_flags())
    assert native.precision == ("bf16" if native.bf16 else "fp32")
    assert inference_runtime(inference_settings(device="cpu", precision="bf16")).bf16 is True


@pytest.mark.parametrize("channels_last", [False, True])
def test_bf16_on_the_cpu_runs_the_convolutions_in_bf16_and_returns_float32(channels_last):
    from brainmets.inference import prepare_network
    from brainmets.models import build_model

    spec = validate_model("unet", {"arch": "dynunet", "filters": [4, 8, 16], "patch": [16] * 3})
    seen = {}
    outputs = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = build_model("unet", spec, in_channels=2, out_channels=3)
        runtime = Runtime.create("cpu", channels_last, precision=precision)
        info = {"subset": "t1c+t2f", "in_channels": 2, "patch": [16] * 3, "spec": spec}
        network = prepare_network(model, info, runtime)
        convs = [m for m in network.model.modules() if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d))]
        assert len(convs) > 5
        for conv in convs:  # after prepare_network, whose FLOP count runs the network once in fp32
            conv.register_forward_hook(lambda module, args, out, p=precision: seen.setdefault(p, set()).add(out.dtype))
        outputs[precision] = network(torch.randn(2, 2, 16, 16, 16, generator=torch.Generator().manual_seed(1)),
                                     runtime)
    assert seen == {"fp32": {torch.float32}, "bf16": {torch.bfloat16}}
    assert outputs["bf16"].dtype == outputs["fp32"].dtype == torch.float32
    # the same network: bf16 rounding moves the logits a little, not more
    assert not torch.equal(outputs["bf16"], outputs["fp32"])
    assert torch.allclose(outputs["bf16"], outputs["fp32"], atol=0.1)


def test_the_training_loss_of_bf16_outputs_is_computed_in_fp32():
    from brainmets.training.losses import detection_loss, segmentation_loss

    logits = torch.randn(2, 3, 8, 8, 8, generator=torch.Generator().manual_seed(0)).bfloat16()
    target = (torch.rand(2, 3, 8, 8, 8, generator=torch.Generator().manual_seed(1)) > 0.7).float()
    aux = logits[:, :, ::2, ::2, ::2]  # a deep-supervision head at half size, bf16 as well
    loss = segmentation_loss(logits, [aux], target, 0.5, None)
    assert loss.dtype == torch.float32
    assert torch.equal(loss, segmentation_loss(logits.float(), [aux.float()], target, 0.5, None))
    scores = logits[:, 0, 0, 0, :1]
    assert detection_loss(scores, target[:, 0, 0, 0, :1]).dtype == torch.float32


class ShiftedConv(torch.nn.Conv3d):
    """A convolution of its input shifted by 1024, the shift's own response taken off: the same result as
    a plain convolution in fp32, but bf16 (8 significant bits) keeps nothing of the input beside 1024."""

    def forward(self, x):
        shift = torch.full_like(x, 1024.0)
        return super().forward(x + shift) - super().forward(shift)


@pytest.mark.parametrize("channels_last", [False, True])
def test_bf16_gradient_faults_names_the_convolutions_bf16_gets_wrong(channels_last):
    model = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3, padding=1), torch.nn.ReLU(), ShiftedConv(4, 4, 3, padding=1),
                                torch.nn.Conv3d(4, 1, 1))
    runtime = Runtime.create("cpu", channels_last, precision="bf16")
    model = runtime.place(model).train()
    rng = torch.get_rng_state()
    assert bf16_gradient_faults(model, (3, 2, 6, 6, 6), runtime) == ["2"]
    # checking changes nothing of the run: random stream, mode, weights' gradients
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training and all(p.grad is None for p in model.parameters())
    plain = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 1, 1))
    assert bf16_gradient_faults(runtime.place(plain), (3, 2, 6, 6, 6), runtime) == []
