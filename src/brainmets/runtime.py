"""Where networks run, for training and inference alike: device, bf16 autocast, memory format.

* Device: the ``device`` settings, whose values the config schema defines and
  checks (``$defs/device``); ``auto`` is the first CUDA device when there is
  one, else the CPU. Asking for CUDA on a machine without it is an error
  naming the setting, never a silent fall-back to the CPU.
* Autocast: bf16 on CUDA (fast on tensor cores); none on the CPU, which runs
  plain fp32 because bf16 is ~4x slower on CPUs without AMX/AVX512-BF16.
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
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Runtime:
    """Where and how networks run: device, bf16 autocast (CUDA only), memory format."""

    device: torch.device
    #: whether networks that suit channels_last_3d run in it
    channels_last: bool

    @classmethod
    def create(cls, device: str = "auto", channels_last: str | bool = "auto", *, auto_on_cpu: bool = False,
               auto_on_cuda: bool = True, section: str = "") -> "Runtime":
        """Resolve the ``device`` and ``channels_last`` settings; ``auto_on_*``: what ``auto`` means there.

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
        return cls(device=resolved, channels_last=bool(choice))

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on CUDA; on the CPU a context that changes nothing (plain fp32)."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
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
