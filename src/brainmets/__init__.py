"""brainmets: brain-metastasis segmentation experiments (modality study, two-stage model)."""

__version__ = "0.1.0"
