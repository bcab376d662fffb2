"""The DeepSpeed engine around a model: AdamW and its schedule from the family's parameter groups."""

from __future__ import annotations

import torch
from torch import nn

from .config import TrainConfig
from .families.base import ModelFamily
from .optim import build_optimizer


def _deep_merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def build_engine(config: TrainConfig, family: ModelFamily, model: nn.Module, device: torch.device, start_step: int):
    """The DeepSpeed engine around ``model``, its AdamW and schedule positioned at ``start_step``."""
    import deepspeed

    optimizer, schedule = build_optimizer(family.param_groups(model), config.optimizer, config.steps, start_step)
    ds_config = {
        "train_micro_batch_size_per_gpu": 1,  # we batch and compute the loss ourselves
        "gradient_accumulation_steps": 1,
        "gradient_clipping": config.optimizer.grad_clip,
        "zero_optimization": {"stage": config.zero_stage},
        "bf16": {"enabled": config.precision == "bf16" and device.type == "cuda"},
        "steps_per_print": 2**31 - 1,  # our own log
    }
    engine, _, _, _ = deepspeed.initialize(
        model=model.to(device), optimizer=optimizer, lr_scheduler=schedule,
        config=_deep_merge(ds_config, config.deepspeed),
    )
    return engine, optimizer
