"""Tiny training configs shared by the training tests."""

from __future__ import annotations


def tiny_config(tmp_path, stages, **over) -> dict:
    """A config dict for a tiny model at 32x32 pixels (x8 VAE, 4x4 latents)."""
    cfg = {
        "output_dir": str(tmp_path / "run"),
        "seed": 3,
        "log_every": 1,
        "checkpoint_every": 1000,
        "checkpoint_every_minutes": 1000,
        "sample_steps": 2,
        "data": {"kind": "synth", "size": 32, "synth_frames": 6, "clip_frames": 4,
                 "num_seeds": 4, "cache_clips": 4},
        "model": {
            "name": "test-tiny",
            "arch": {
                "unet": {"block_out_channels": [32, 32, 32, 32], "layers_per_block": 1,
                         "attention_head_dim": 2, "cross_attention_dim": 16,
                         "norm_num_groups": 8, "in_channels": 4, "out_channels": 4,
                         "sample_size": 8},
                "motion": {"motion_module_kwargs": {"num_attention_heads": 2}},
                "controlnet": {"conditioning_embedding_out_channels": [8, 8, 16, 16]},
                "vae": {"block_out_channels": [8, 16, 16, 16], "norm_num_groups": 8,
                        "latent_channels": 4, "sample_size": 32},
                "text_tokens": 2,
            },
            "sampling": {"steps": 2, "guidance": 1.5, "context_frames": 4,
                         "context_overlap": 1, "reference_bank_dtype": None},
        },
        "stages": stages,
    }
    for k, v in over.items():
        cfg[k] = v
    return cfg
