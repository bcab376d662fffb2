"""What the training loop needs to know about the model it trains: the protocol of a model family.

The loop (:mod:`mmclip.train.loop`) owns everything a stage has whatever it trains: the engine, run
checkpoints, resume, preemption, the loader's state, logging. A family supplies the rest: its
model config and checks, its own config block, the model (and how earlier weights load into it),
its phases (the CLIP family's resolution schedule), the optimizer's parameter groups, the loader's
tokenizers, what one step computes, the temperature of each stream kind, the scalars worth logging
and the model checkpoint it leaves. The stage YAML picks the family with ``family:`` (default
``clip``); the registry is :data:`mmclip.train.families.FAMILIES`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ... import checkpoint
from ...data import MultiStreamLoader
from ...data.config import DataConfig
from ..config import TrainConfig
from ..step import Backward, ContrastiveStep, StepLosses


class ModelFamily:
    """The family-specific half of a training stage; ``config`` and ``model_config`` are validated."""

    def __init__(self, config: TrainConfig, model_config: Any):
        self.config, self.model_config = config, model_config
        self.kinds = {name: stream.kind for name, stream in config.data.streams.items()}

    @staticmethod
    def load_model_config(config: TrainConfig, path: str | Path) -> Any:
        """The model config the stage names, with the checks that need both (``ConfigError`` naming key and file)."""
        raise NotImplementedError

    def phase(self, step: int) -> Any:
        """What the model's shape depends on at ``step`` (JSON-able; the CLIP family: the image size).

        When it changes, the loop checkpoints, rebuilds the model at the new phase from those
        weights, and a new engine and loader continue (Adam moments restart, the schedule does not).
        """
        return None

    def build_model(self, phase: Any, weights: Path | None) -> nn.Module:
        """The model to train at ``phase``, the same on every rank; ``weights``: a checkpoint to start from."""
        raise NotImplementedError

    def param_groups(self, model: nn.Module) -> list[dict]:
        """AdamW groups, each with ``lr`` and a ``tower`` tag (logged per tower)."""
        raise NotImplementedError

    def make_loader(self, model: nn.Module, data: DataConfig, phase: Any, rank: int, world_size: int) -> MultiStreamLoader:
        """This rank's loader of ``data`` (per-rank batch sizes) at ``phase``."""
        raise NotImplementedError

    def logit_scale(self, model: nn.Module, kind: str) -> torch.Tensor:
        """The logit scale (``log(1 / temperature)``) of a contrastive stream of ``kind``."""
        raise NotImplementedError

    def contrastive_step(self, engine, batches: dict[str, dict], dtype: torch.dtype, device: torch.device,
                         backward: Backward) -> StepLosses:
        """InfoNCE per stream with this family's temperatures, whole or by GradCache chunks."""
        module = engine.module
        contrastive = ContrastiveStep(engine, lambda kind: self.logit_scale(module, kind), self.kinds, self.loss_fn,
                                      self.config.loss.weights, dtype, device, backward,
                                      self.fixed_image_embeddings(module))
        if self.config.grad_cache_chunk:
            return contrastive.grad_cache(batches, self.config.grad_cache_chunk)
        return contrastive.whole(batches)

    def fixed_image_embeddings(self, module: nn.Module) -> bool:
        """Whether nothing that computes image embeddings trains (GradCache then embeds images once)."""
        return False

    def step(self, engine, batches: dict[str, dict], dtype: torch.dtype, device: torch.device,
             backward: Backward) -> StepLosses:
        """One step's losses, backpropagated through ``backward(loss, last)`` (the engine steps after)."""
        return self.contrastive_step(engine, batches, dtype, device, backward)

    def after_step(self, module: nn.Module) -> None:
        """After the optimizer step (e.g. clamping learned temperatures)."""

    def scalars(self, module: nn.Module, phase: Any) -> dict[str, Any]:
        """Extra values for the step's log record."""
        return {}

    def step_flops(self, module: nn.Module, batches: dict[str, dict], phase: Any) -> float | None:
        """Analytic training FLOPs of the step on this rank (for MFU); None when not modelled."""
        return None

    def checkpoint_weights(self, module: nn.Module, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The model checkpoint's weights from the module's full fp32 state dict."""
        return weights

    def write_model(self, directory: Path, module: nn.Module, weights: dict[str, torch.Tensor]) -> None:
        """The model checkpoint (:mod:`mmclip.checkpoint`) inside a run checkpoint's directory."""
        checkpoint.write(directory, module.config, self.checkpoint_weights(module, weights))
