"""Training stage: one loop for the segmentors and the detector (sampling, augmentation, losses,
schedules, validation, checkpoint/resume, MLflow mirroring).

Public API:

* :func:`train` (config, :class:`RunRequest`) -> :class:`TrainResult` (loop.py; the files it writes,
  stopping on signals); the loop itself is ``trainer.Trainer`` (set-up, resume, step, validate, checkpoint)
* :func:`resolve_subset` (``KEY`` | ``selected`` | ``@selection.json``) -> canonical key
* :func:`training_settings` (validated config) -> :class:`TrainingSettings` (keys and defaults: the config schema)

torch and MONAI are imported when :func:`train` runs, not at import time.
"""

from brainmets.decision import resolve_subset
from brainmets.training.loop import RunRequest, TrainResult, train
from brainmets.training.settings import TrainingSettings, model_task, training_settings

__all__ = ["RunRequest", "TrainResult", "TrainingSettings", "model_task", "resolve_subset", "train",
           "training_settings"]
