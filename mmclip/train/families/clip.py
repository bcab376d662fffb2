"""The dual encoder of jina-clip-v2 as a model family (``family: clip``, the default): InfoNCE per
stream, one learned temperature for image-text and one for every text-text task, and the
resolution schedule as the family's phases."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from ... import checkpoint
from ...config import ConfigError
from ...data import MultiStreamLoader
from ...data.config import DataConfig
from ...factory import create_model, load_model_config
from ...losses import InfoNCELoss
from ...models import MMCLIP, CLIPConfig
from ...tokenizer import load_tokenizer
from ..compile import compile_towers
from ..config import TrainConfig
from ..metrics import step_flops
from ..optim import param_groups
from ..trainable import apply_towers, merged_weights
from .base import ModelFamily

# The learned temperatures: trained as [1] (DeepSpeed's parameter broadcast views every tensor as
# bytes, which fails on 0-d ones, as FSDP2 does in open_clip), 0-d again in the model checkpoint.
LOGIT_SCALES = {"image_text": "logit_scale_image_text", "text": "logit_scale_text_text"}


def logit_scale(model: MMCLIP, kind: str) -> torch.Tensor:
    """One temperature for image-text streams, one shared by every text-text task."""
    return getattr(model, LOGIT_SCALES["image_text" if kind == "image_text" else "text"])


def image_size_at(config: TrainConfig, step: int) -> int:
    """The resolution of ``step``: the last schedule phase started by then, else ``data.image_size``."""
    size = config.data.image_size
    for phase in config.clip.resolution_schedule:
        if phase.step <= step:
            size = phase.image_size
    return size


class CLIPFamily(ModelFamily):
    """The dual encoder: phases are image sizes (``clip.resolution_schedule``)."""

    def __init__(self, config: TrainConfig, model_config: CLIPConfig):
        super().__init__(config, model_config)
        dims = config.loss.matryoshka_dims or model_config.matryoshka_dims
        self.loss_fn = InfoNCELoss(dims, config.loss.matryoshka_weights)

    @staticmethod
    def load_model_config(config: TrainConfig, path: str | Path) -> CLIPConfig:
        model_config = load_model_config(config.model, config.model_overrides)
        patch = model_config.vision.patch_size
        sizes = [("data.image_size", config.data.image_size)]
        schedule = config.clip.resolution_schedule
        sizes += [(f"clip.resolution_schedule[{i}].image_size", p.image_size) for i, p in enumerate(schedule)]
        for key, size in sizes:
            if size < patch:
                raise ConfigError(f"{path}: {key}: image size {size} is below the patch size {patch}")
        for i, phase in enumerate(schedule):
            if not 0 <= phase.step < config.steps:
                raise ConfigError(f"{path}: clip.resolution_schedule[{i}].step: {phase.step} is outside "
                                  f"[0, steps={config.steps})")
        # ZeRO-3 partitions the learned temperatures outside the forward, where GradCache's loss reads them.
        if config.grad_cache_chunk and config.zero_stage == 3:
            raise ConfigError(f"{path}: grad_cache_chunk: needs zero_stage 0, 1 or 2 (the CLIP family's temperatures "
                              "are learned)")
        if model_config.text.tokenizer is None:
            raise ConfigError(f"{path}: model_overrides: the model config names no text.tokenizer, which training needs")
        return model_config

    def phase(self, step: int) -> int:
        return image_size_at(self.config, step)

    def build_model(self, phase: int, weights: Path | None) -> MMCLIP:
        config = self.config
        with torch.random.fork_rng(devices=[]):  # the same initial weights on every rank, RNG untouched
            torch.manual_seed(config.seed)
            model = create_model(copy.deepcopy(self.model_config))  # the tower resizes its own config
        if weights is not None:
            checkpoint.load_weights(model, weights)  # at the checkpoint's grid, then resized below
        if model.vision.config.image_size != phase:
            model.vision.set_image_size(phase)
        if config.clip.patch_dropout is not None:
            model.vision.config.patch_dropout = config.clip.patch_dropout
        apply_towers(model, config.clip.towers)
        model.set_grad_checkpointing(config.gradient_checkpointing)
        if config.clip.compile:
            compile_towers(model)
        for name in LOGIT_SCALES.values():
            setattr(model, name, torch.nn.Parameter(getattr(model, name).detach().reshape(1)))
        return model

    def param_groups(self, model: MMCLIP) -> list[dict]:
        return param_groups(model, self.config.optimizer)

    def make_loader(self, model: MMCLIP, data: DataConfig, phase: int, rank: int, world_size: int) -> MultiStreamLoader:
        data = copy.copy(data)
        data.image_size = phase
        tokenizer = load_tokenizer(model.config.text.tokenizer, model.config.text)
        return MultiStreamLoader(data, tokenizer, rank=rank, world_size=world_size)

    def logit_scale(self, model: MMCLIP, kind: str) -> torch.Tensor:
        return logit_scale(model, kind)

    def fixed_image_embeddings(self, module: MMCLIP) -> bool:
        """A frozen vision tower and projection (``clip.towers.vision.mode: frozen``, or ``lock:0``
        without a projection, as jina-clip-v2 has none)."""
        return not any(p.requires_grad for p in (*module.vision.parameters(), *module.vision_proj.parameters()))

    def after_step(self, module: MMCLIP) -> None:
        module.clamp_logit_scales()

    def scalars(self, module: MMCLIP, phase: int) -> dict[str, Any]:
        return {
            "image_size": phase,
            "temperature": {
                "image_text": float(1 / module.logit_scale_image_text.detach().exp()),
                "text_text": float(1 / module.logit_scale_text_text.detach().exp()),
            },
        }

    def step_flops(self, module: MMCLIP, batches, phase: int) -> float:
        return step_flops(module.config, self.config.data, batches, phase)

    def checkpoint_weights(self, module: MMCLIP, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Plain MMCLIP weights: the temperatures 0-d again, the towers' LoRA merged (``clip.towers``)."""
        scales = set(LOGIT_SCALES.values())
        weights = {k: v.reshape(()) if k in scales else v for k, v in weights.items()}
        return merged_weights(self.config.clip.towers, weights)
