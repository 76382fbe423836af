"""Where networks run, for training and inference alike: device, precision (bf16 autocast), memory format.

* Device: the ``device`` settings, whose values the config schema defines and
  checks (``$defs/device``); ``auto`` is the first CUDA device when there is
  one, else the CPU. Asking for CUDA on a machine without it is an error
  naming the setting, never a silent fall-back to the CPU.
* Precision: the ``precision`` settings. ``auto``: bf16 autocast on CUDA (fast
  on tensor cores), plain fp32 on the CPU, because bf16 is ~4x slower on CPUs
  without AMX/AVX512-BF16. ``native_bf16``: bf16 wherever the hardware runs it
  natively, CUDA or a CPU whose flags include ``avx512_bf16`` or ``amx_bf16``
  (:func:`cpu_runs_bf16_natively`), fp32 elsewhere; on such a CPU the default
  study's U-Net trained 1.6x and predicted 2.1x faster in bf16, while the
  authors' ResUNet trained slower (benchmarks/results/precision.md).
  ``bf16`` and ``fp32`` force one everywhere. Under autocast the convolutions
  and matrix products run in bf16; losses are computed from float32 casts of the
  outputs and inference returns float32. Training checks first that bf16 computes
  its network's weight gradients right (:func:`bf16_gradient_faults`) and trains
  in fp32 where it does not.
* Memory format: ``channels_last`` (``auto``, true or false) says whether
  networks that suit it run in channels_last_3d. ``auto`` resolves per device
  to the choice the stage measured, so the stages pass it in: training turns
  it on wherever the network suits it (every default network's step measured
  1.2-1.4x faster than in NCDHW on the CPU, benchmarks/results/training.md);
  inference only on CUDA (on the CPU its gain was inconsistent,
  benchmarks/results/inference.md).
"""

from __future__ import annotations

import contextlib
import copy
import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from brainmets.errors import BrainmetsError


def resolve_device(name: str = "auto", setting: str = "device") -> torch.device:
    """The device a ``device`` setting names: ``auto`` -> the first CUDA device if there is one, else the CPU.

    ``name`` is a value the config schema's ``$defs/device`` accepted (checked
    with the config, or as a CLI flag by :func:`brainmets.cli.config_override`);
    checked here is only what the schema cannot know: whether this machine has
    CUDA, and the CUDA device asked for. ``setting`` names the key in those
    errors (e.g. ``training.device``).
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BrainmetsError(
                f"{setting} is {name!r} but no CUDA device is available on this machine "
                f"(torch {torch.__version__}); set it to auto or cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise BrainmetsError(
                f"{setting} is {name!r} but this machine has {torch.cuda.device_count()} CUDA device(s) "
                f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})"
            )
    return device


#: the ``precision`` settings (the config schema's enum; see the module docstring)
PRECISIONS = ("auto", "native_bf16", "bf16", "fp32")
#: CPU flags (Linux /proc/cpuinfo names) of instructions that compute bf16 products natively
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_runs_bf16_natively(flags: str) -> bool:
    """Whether a CPU with these ``flags`` (a /proc/cpuinfo ``flags`` line or its value) has bf16 instructions."""
    return not BF16_CPU_FLAGS.isdisjoint(flags.split(":", 1)[-1].split())


@functools.cache
def cpu_flags() -> str:
    """The flags of this machine's first CPU as /proc/cpuinfo lists them; empty where there is none (not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    return next((line for line in text.splitlines() if line.split(":", 1)[0].strip() == "flags"), "")


def resolve_precision(precision: str, device: torch.device, setting: str = "precision") -> bool:
    """Whether networks run under bf16 autocast on ``device`` for a ``precision`` setting (module docstring)."""
    if precision not in PRECISIONS:
        raise BrainmetsError(f"{setting} must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision in ("bf16", "fp32"):
        return precision == "bf16"
    if device.type == "cuda":
        return True
    return precision == "native_bf16" and cpu_runs_bf16_natively(cpu_flags())


@dataclass(frozen=True)
class Runtime:
    """Where and how networks run: device, precision (bf16 autocast or fp32), memory format."""

    device: torch.device
    #: whether networks that suit channels_last_3d run in it
    channels_last: bool
    #: whether networks run under bf16 autocast (else plain fp32)
    bf16: bool = False

    @classmethod
    def create(cls, device: str = "auto", channels_last: str | bool = "auto", *, auto_on_cpu: bool = False,
               auto_on_cuda: bool = True, section: str = "", precision: str = "auto") -> "Runtime":
        """Resolve the ``device``, ``channels_last`` and ``precision`` settings; ``auto_on_*``: what
        ``channels_last: auto`` means there.

        ``section`` prefixes the keys named in errors (``training`` -> ``training.device``).
        """
        prefix = f"{section}." if section else ""
        resolved = resolve_device(device, f"{prefix}device")
        # YAML gives booleans; training's settings keep their names
        choice = {"true": True, "false": False, True: True, False: False, "auto": "auto"}.get(channels_last)
        if choice is None:
            raise BrainmetsError(f"{prefix}channels_last must be auto, true or false, got {channels_last!r}")
        if choice == "auto":
            choice = auto_on_cuda if resolved.type == "cuda" else auto_on_cpu
        return cls(device=resolved, channels_last=bool(choice),
                   bf16=resolve_precision(precision, resolved, f"{prefix}precision"))

    @property
    def precision(self) -> str:
        """What the networks compute in, bf16 (autocast) or fp32: the resolved ``precision`` setting."""
        return "bf16" if self.bf16 else "fp32"

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on the device when the precision is bf16; else a context that changes nothing (fp32)."""
        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """A batch moved to the device, in the memory format of the networks."""
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last_3d) if self.channels_last else x

    def place(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` on the device, in the memory format of the networks."""
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last_3d) if self.channels_last else model

    def synchronize(self) -> None:
        """Wait for queued CUDA work (so that a wall-clock time covers it); nothing on the CPU."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def bf16_gradient_faults(model: torch.nn.Module, batch_shape: tuple[int, ...], runtime: Runtime,
                         tolerance: float = 0.1) -> list[str]:
    """Names of the convolutions of ``model`` whose weight gradient under bf16 autocast is wrong on this machine.

    Why: torch 2.13's CPU kernel for the bf16 weight gradient of a 3x3x3
    convolution (padding 1) whose input is 2 voxels deep reads memory it never
    wrote, at some channel counts (32 in and 8 out among them, not 8 and 8): on
    the 2-core AMD EPYC (avx512_bf16) every such gradient came out wrong, a
    fifth of them non-finite, while the forward pass and the input gradient
    were right. The default detector (DenseNet121 at a 16^3 patch) has two such
    layers in its second dense block (2^3) and lost a study run to a NaN loss.

    Each convolution is run alone on random data of the shape it receives in
    ``model`` for a batch of ``batch_shape`` (found by one forward pass of a copy
    in training mode, so that heads used only in training, such as deep
    supervision, are seen; the model itself and the random stream are left as
    they were), once under autocast and once in fp32; a fault is a weight
    gradient whose largest difference exceeds ``tolerance`` times the largest
    fp32 value (bf16 rounding stays below 0.01 in every layer of the default
    networks; the broken kernel gave 1 to 1e37, or NaN).
    """
    seen: dict[str, tuple[torch.nn.Module, torch.Size, torch.memory_format]] = {}

    def record(name: str):
        def hook(module, args, output):
            x = args[0]
            layout = (torch.channels_last_3d if x.dim() == 5 and not x.is_contiguous()
                      and x.is_contiguous(memory_format=torch.channels_last_3d) else torch.contiguous_format)
            seen.setdefault(name, (module, x.shape, layout))
        return hook

    probe = copy.deepcopy(model).train()
    for name, module in probe.named_modules():
        if isinstance(module, torch.nn.modules.conv._ConvNd):
            module.register_forward_hook(record(name))
    devices = [runtime.device] if runtime.device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        probe(runtime.inputs(torch.zeros(batch_shape)))
    generator = torch.Generator().manual_seed(0)
    faults = []
    for name, (layer, shape, layout) in seen.items():
        x = torch.randn(shape, generator=generator).to(runtime.device, memory_format=layout)
        upstream, grads = None, []
        for bf16 in (False, True):
            layer.zero_grad(set_to_none=True)
            with torch.autocast(runtime.device.type, dtype=torch.bfloat16, enabled=bf16):
                out = layer(x)
            if upstream is None:
                upstream = torch.randn(out.shape, generator=generator).to(runtime.device)
            (out.float() * upstream).sum().backward()
            grads.append(layer.weight.grad.float())
        reference, tested = grads
        error = float((tested - reference).abs().max() / reference.abs().max())
        if not error <= tolerance:  # NaN included
            faults.append(name)
    return faults
