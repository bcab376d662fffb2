"""What the training loop needs to know about the model it trains: one class per model family.

The loop (:mod:`.trainer`) owns everything a stage has whatever it trains: the engine, checkpoints,
resume, preemption, the loader's state, logging. A family supplies the rest: its model config and
checks, the model (and how earlier weights load into it), the optimizer's parameter groups, the
loader's tokenizers, what one step computes, and the scalars worth logging. The stage YAML picks
the family with ``family:`` (default ``clip``); ``lusifer`` is :class:`mmclip.train.lusifer.LusiferFamily`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import ConfigError
from ..data import MultiStreamLoader
from ..data.config import DataConfig
from ..factory import create_model, load_model_config
from ..losses import InfoNCELoss
from ..models import MMCLIP, CLIPConfig
from ..tokenizer import load_tokenizer
from . import checkpoint as ckpt
from .compile import compile_towers
from .config import TrainConfig
from .grad_cache import Backward, ContrastiveStep, StepLosses
from .metrics import step_flops
from .optim import param_groups


class ModelFamily:
    """The family-specific half of a training stage; ``config`` and ``model_config`` are validated."""

    def __init__(self, config: TrainConfig, model_config: Any):
        self.config, self.model_config = config, model_config

    @staticmethod
    def load_model_config(config: TrainConfig, path: str | Path) -> Any:
        """The model config the stage names, with the checks that need both (``ConfigError`` naming key and file)."""
        raise NotImplementedError

    def build_model(self, image_size: int, weights: Path | None) -> nn.Module:
        """The model to train, the same on every rank; ``weights``: a checkpoint to start from."""
        raise NotImplementedError

    def param_groups(self, model: nn.Module) -> list[dict]:
        """AdamW groups, each with ``lr`` and a ``tower`` tag (logged per tower)."""
        raise NotImplementedError

    def make_loader(self, model: nn.Module, data: DataConfig, rank: int, world_size: int) -> MultiStreamLoader:
        raise NotImplementedError

    def step(self, engine, batches: dict[str, dict], dtype: torch.dtype, device: torch.device,
             backward: Backward) -> StepLosses:
        """One step's losses, backpropagated through ``backward(loss, last)`` (the engine steps after)."""
        raise NotImplementedError

    def after_step(self, module: nn.Module) -> None:
        """After the optimizer step (e.g. clamping learned temperatures)."""

    def scalars(self, module: nn.Module) -> dict[str, Any]:
        """Extra values for the step's log record."""
        return {}

    def step_flops(self, module: nn.Module, batches: dict[str, dict], image_size: int) -> float | None:
        """Analytic training FLOPs of the step on this rank (for MFU); None when not modelled."""
        return None

    def export_weights(self, module: nn.Module, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The checkpoint's ``model.safetensors`` from the module's full fp32 state dict."""
        return weights


class CLIPFamily(ModelFamily):
    """The dual encoder of jina-clip-v2: InfoNCE per stream, learned temperatures, resolution schedule."""

    def __init__(self, config: TrainConfig, model_config: CLIPConfig):
        super().__init__(config, model_config)
        dims = config.loss.matryoshka_dims or model_config.matryoshka_dims
        self.loss_fn = InfoNCELoss(dims, config.loss.matryoshka_weights)
        self.kinds = {name: stream.kind for name, stream in config.data.streams.items()}

    @staticmethod
    def load_model_config(config: TrainConfig, path: str | Path) -> CLIPConfig:
        model_config = load_model_config(config.model, config.model_overrides)
        patch = model_config.vision.patch_size
        sizes = [("data.image_size", config.data.image_size)]
        sizes += [(f"resolution_schedule[{i}].image_size", p.image_size) for i, p in enumerate(config.resolution_schedule)]
        for key, size in sizes:
            if size < patch:
                raise ConfigError(f"{path}: {key}: image size {size} is below the patch size {patch}")
        for i, phase in enumerate(config.resolution_schedule):
            if not 0 <= phase.step < config.steps:
                raise ConfigError(f"{path}: resolution_schedule[{i}].step: {phase.step} is outside [0, steps={config.steps})")
        if model_config.text.tokenizer is None:
            raise ConfigError(f"{path}: model_overrides: the model config names no text.tokenizer, which training needs")
        return model_config

    def build_model(self, image_size: int, weights: Path | None) -> MMCLIP:
        config = self.config
        with torch.random.fork_rng(devices=[]):  # the same initial weights on every rank, RNG untouched
            torch.manual_seed(config.seed)
            model = create_model(config.model, overrides=config.model_overrides)
        if weights is not None:
            ckpt.load_model_weights(model, weights)
        if model.vision.config.image_size != image_size:
            model.vision.set_image_size(image_size)
        if config.patch_dropout is not None:
            model.vision.config.patch_dropout = config.patch_dropout
        model.set_grad_checkpointing(config.gradient_checkpointing)
        if config.compile:
            compile_towers(model)
        # DeepSpeed's parameter broadcast views every tensor as bytes, which fails on 0-d ones (as
        # FSDP2 does in open_clip): train the temperatures as [1]; checkpoints export them 0-d again.
        for name in ckpt.LOGIT_SCALES:
            setattr(model, name, torch.nn.Parameter(getattr(model, name).detach().reshape(1)))
        return model

    def param_groups(self, model: MMCLIP) -> list[dict]:
        return param_groups(model, self.config.optimizer)

    def make_loader(self, model: MMCLIP, data: DataConfig, rank: int, world_size: int) -> MultiStreamLoader:
        tokenizer = load_tokenizer(model.config.text.tokenizer, model.config.text)
        return MultiStreamLoader(data, tokenizer, rank=rank, world_size=world_size)

    def step(self, engine, batches, dtype, device, backward) -> StepLosses:
        contrastive = ContrastiveStep(engine, engine.module, self.kinds, self.loss_fn, self.config.loss.weights,
                                      dtype, device, backward)
        if self.config.grad_cache_chunk:
            return contrastive.grad_cache(batches, self.config.grad_cache_chunk)
        return contrastive.whole(batches)

    def after_step(self, module: MMCLIP) -> None:
        module.clamp_logit_scales()

    def scalars(self, module: MMCLIP) -> dict[str, Any]:
        return {
            "temperature": {
                "image_text": float(1 / module.logit_scale_image_text.detach().exp()),
                "text_text": float(1 / module.logit_scale_text_text.detach().exp()),
            }
        }

    def step_flops(self, module: MMCLIP, batches, image_size: int) -> float:
        return step_flops(module.config, self.config.data, batches, image_size)


def family_class(name: str) -> type[ModelFamily]:
    if name == "lusifer":
        from .lusifer import LusiferFamily

        return LusiferFamily
    return CLIPFamily
