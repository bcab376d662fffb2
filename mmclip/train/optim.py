"""AdamW parameter groups (per-tower peak LR, layer-wise decay, no decay where it hurts) and the schedule."""

from __future__ import annotations

import math

import torch
from timm.optim import param_groups_layer_decay
from torch.optim.lr_scheduler import LambdaLR

from ..models import MMCLIP
from .config import OptimizerConfig


def param_groups(model: MMCLIP, config: OptimizerConfig) -> list[dict]:
    """One group per (tower, layer, decay or not), each with ``lr = peak * lr_scale`` and a ``tower`` tag.

    timm's layer decay keeps 1-D params and biases out of weight decay; the towers add their
    embeddings and position embeddings. Projections take their tower's top-layer LR; the
    temperatures get their own group without decay. Frozen parameters (``requires_grad`` off, see
    :mod:`.trainable`) are in no group, so the optimizer keeps no state for them.
    """
    groups = []
    towers = (
        ("vision", model.vision, model.vision_proj, config.lr_vision, config.layer_decay_vision),
        ("text", model.text, model.text_proj, config.lr_text, config.layer_decay_text),
    )
    for name, tower, projection, peak, decay in towers:
        for group in param_groups_layer_decay(
            tower, weight_decay=config.weight_decay, no_weight_decay_list=tower.no_weight_decay(), layer_decay=decay
        ):
            groups.append({**group, "tower": name, "lr": peak * group["lr_scale"]})
        trained = [p for p in projection.parameters() if p.requires_grad]
        if trained:
            groups.append({"params": trained, "weight_decay": config.weight_decay,
                           "lr_scale": 1.0, "tower": name, "lr": peak})
    scales = [model.logit_scale_image_text, model.logit_scale_text_text]
    lr_scale = config.lr_logit_scale or config.lr_vision
    groups.append({"params": scales, "weight_decay": 0.0, "lr_scale": 1.0, "tower": "logit_scale", "lr": lr_scale})
    return groups


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Linear warm-up to 1, then cosine to ``min_lr_ratio`` at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def adamw(params, **kwargs) -> torch.optim.AdamW:
    """torch's AdamW with its fused kernel, on CPU and CUDA alike: one pass over each tensor instead
    of a dozen elementwise ops (measured in ``bench/train_step.py``'s ``--optimizer`` rows)."""
    return torch.optim.AdamW(params, fused=True, **kwargs)


def build_optimizer(
    groups: list[dict], config: OptimizerConfig, total_steps: int, start_step: int = 0
) -> tuple[torch.optim.AdamW, LambdaLR]:
    """AdamW over ``groups`` (e.g. :func:`param_groups`) and its schedule, positioned at ``start_step``
    (the schedule steps once per optimizer step)."""
    for group in groups:
        group["initial_lr"] = group["lr"]  # lets LambdaLR start mid-schedule
    optimizer = adamw(groups, betas=tuple(config.betas), eps=config.eps)
    schedule = LambdaLR(
        optimizer,
        lambda step: lr_factor(step, config.warmup_steps, total_steps, config.min_lr_ratio),
        last_epoch=start_step - 1,
    )
    return optimizer, schedule


def lr_per_tower(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The highest current LR of each tower (its top layer's)."""
    lrs: dict[str, float] = {}
    for group in optimizer.param_groups:
        lrs[group["tower"]] = max(lrs.get(group["tower"], 0.0), group["lr"])
    return lrs
