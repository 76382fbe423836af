"""Model registry: config entries -> MONAI or this package's networks, one forward contract, trained-model files.

Public API:

* :func:`build_model` (name, validated spec, in_channels, out_channels) -> ``nn.Module``
* :func:`forward_outputs` (model, x) -> ``(main_logits, aux_logits, extra_loss)``
* :func:`count_parameters`, :func:`model_flops`
* :func:`save_trained` / :func:`load_trained`
"""

from brainmets.models.forward import count_parameters, forward_outputs, model_flops
from brainmets.models.persist import FORMAT, INFO_KEYS, load_trained, save_trained
from brainmets.models.registry import (
    ARCHITECTURES,
    ChannelAdapter,
    build_model,
    dynunet_layout,
    inference_window,
    is_convolutional,
    resolve_arch,
)

__all__ = [
    "ARCHITECTURES",
    "FORMAT",
    "INFO_KEYS",
    "ChannelAdapter",
    "build_model",
    "count_parameters",
    "dynunet_layout",
    "forward_outputs",
    "inference_window",
    "is_convolutional",
    "load_trained",
    "model_flops",
    "resolve_arch",
    "save_trained",
]
