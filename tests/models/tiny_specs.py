"""Tiny registry entries, one per architecture, small enough for CPU tests."""

TINY_SPECS: dict[str, dict] = {
    "unet": {"arch": "dynunet", "filters": [4, 8, 16], "residual": False, "deep_supervision": 0, "patch": [16, 16, 16]},
    "segmentor": {"arch": "dynunet", "filters": [4, 8, 16, 16], "residual": True, "deep_supervision": 2, "patch": [16, 16, 16]},
    "detector": {"arch": "densenet121", "init_features": 4, "growth_rate": 4, "block_config": [1, 1], "bn_size": 2, "dropout": 0.2, "patch": [16, 16, 16]},
    "resunet": {"arch": "monai_unet", "channels": [4, 8, 16], "num_res_units": 1, "patch": [16, 16, 16]},
    "attentionunet": {"arch": "attentionunet", "channels": [4, 8, 16], "patch": [16, 16, 16]},
    "basicunet": {"arch": "basicunet", "features": [4, 4, 8, 8, 16, 4], "patch": [32, 32, 32]},
    "vnet": {"arch": "vnet", "dropout": 0.0, "patch": [16, 16, 16]},
    "segresnet": {"arch": "segresnet", "init_filters": 4, "blocks_down": [1, 1], "blocks_up": [1], "patch": [16, 16, 16]},
    "segresnetvae": {"arch": "segresnetvae", "init_filters": 8, "blocks_down": [1, 1], "blocks_up": [1], "vae_nz": 8, "patch": [16, 16, 16]},
    "unetr": {"arch": "unetr", "feature_size": 4, "hidden_size": 24, "mlp_dim": 24, "num_heads": 2, "patch": [16, 16, 16]},
    "swinunetr": {"arch": "swinunetr", "feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1], "window_size": 4, "patch": [64, 32, 32]},
    "swinunetr_v2": {"arch": "swinunetr_v2", "feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1], "window_size": 4, "patch": [64, 32, 32]},
    "resunet3d": {"arch": "resunet3d", "f_maps": 4, "num_levels": 3, "patch": [16, 16, 16]},
    "resunetse3d": {"arch": "resunetse3d", "f_maps": [4, 8, 8], "num_groups": 4, "patch": [16, 16, 16]},
    "nnformer": {"arch": "nnformer", "embed_dim": 12, "depths": [2, 2, 2, 2], "num_heads": [1, 1, 2, 2], "window_sizes": [2, 2, 2, 2], "embed_patch": 2, "patch": [16, 16, 16]},
    "mlp_unext": {"arch": "mlp_unext", "conv_channels": [4, 4, 8], "token_dims": [8, 8], "patch": [32, 32, 32]},
    "resenc_unet": {"arch": "resenc_unet", "features": [4, 8, 16], "blocks": [1, 2, 2], "patch": [16, 16, 16]},
}
