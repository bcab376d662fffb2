"""LUSIFER's training stages as a model family of the one training loop (``family: lusifer``).

* ``align`` (stage 1): language-model losses with the LLM in causal mode, labels on the target
  tokens only. ``text`` streams: masked reconstruction, ``mask_ratio`` of the encoder's real
  tokens replaced by ``<mask>``, the LLM asked for the original text in its own tokenizer.
  ``text_pair`` streams: completion, the encoder reads the query, the LLM writes the positive.
  The causal loss is a choice (ULLME, GritLM): the reference code trains next-token prediction
  with bidirectional attention, where every unmasked target token is visible to its own prediction.
* ``finetune`` (stage 2): InfoNCE with in-batch and hard negatives, the same
  :class:`~mmclip.train.step.ContrastiveStep` (whole or GradCache chunks) as the dual
  encoder, at the fixed temperature of the model config (0.05).

Parts train with peft LoRA (``inject_adapter_in_model``: adapters become ordinary parameters of the
module, so the engine's checkpoint and exact resume carry them), fully, or not at all; the
connector always trains. A checkpoint's ``model.safetensors`` holds the LoRA merged into plain
weights, which is what the next stage's ``init_from`` and ``mmclip export`` read: stage 2 adds new
adapters on the merged stage-1 encoder, as the reference's ``merge_lora`` does.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import math

import torch
from torch import nn

from ... import checkpoint
from ...config import ConfigError
from ...data import MultiStreamLoader
from ...data.config import DataConfig
from ...factory import create_lusifer_model, load_lusifer_config
from ...losses import InfoNCELoss
from ...models import LusiferConfig, LusiferModel
from ...tokenizer import load_tokenizer
from ..config import LUSIFER_STAGES, LoraSettings, TrainConfig
from ..step import StepLosses, to_device
from .base import ModelFamily

logger = logging.getLogger(__name__)

# Every linear layer of each part (the reference's find_all_linear_names), the LM head excluded.
LORA_TARGETS = {
    "encoder": ["Wqkv", "out_proj", "fc1", "fc2"],
    "llm": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
LORA_KEY = ".lora_A.default.weight"


def add_lora(part: nn.Module, name: str, settings: LoraSettings) -> None:
    """peft LoRA adapters in place on ``part`` (its own weights frozen, the adapters trainable)."""
    from peft import LoraConfig, inject_adapter_in_model

    lora = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=LORA_TARGETS[name], bias="none")
    inject_adapter_in_model(lora, part)


def merge_lora(weights: dict[str, torch.Tensor], scaling: float) -> dict[str, torch.Tensor]:
    """A state dict with peft LoRA layers folded into plain ``Linear`` weights: ``W + scaling * B @ A``
    (peft's ``get_delta_weight`` for a Linear), under the module's own names."""
    merged = {}
    for key, value in weights.items():
        if ".lora_" in key:
            continue
        module, base, part = key.rpartition(".base_layer.")
        if not base:
            merged[key] = value
            continue
        if part == "weight" and f"{module}{LORA_KEY}" in weights:
            lora_a, lora_b = weights[f"{module}{LORA_KEY}"], weights[f"{module}.lora_B.default.weight"]
            value = value + scaling * (lora_b.float() @ lora_a.float()).to(value.dtype)
        merged[f"{module}.{part}"] = value
    return merged


class LusiferFamily(ModelFamily):
    def __init__(self, config: TrainConfig, model_config: LusiferConfig):
        super().__init__(config, model_config)
        self.settings = config.lusifer
        dims = config.loss.matryoshka_dims or [model_config.embed_dim]
        self.loss_fn = InfoNCELoss(dims, config.loss.matryoshka_weights)
        self.mask_token_id: int | None = None  # alignment: the encoder tokenizer's <mask> and special ids
        self.special_ids = torch.tensor([], dtype=torch.long)

    @staticmethod
    def load_model_config(config: TrainConfig, path: str | Path) -> LusiferConfig:
        settings = config.lusifer
        kinds = LUSIFER_STAGES[settings.stage]
        for name, stream in config.data.streams.items():
            if stream.kind not in kinds:
                raise ConfigError(f"{path}: data.streams.{name}.kind: a LUSIFER {settings.stage} stage reads {kinds}, "
                                  f"got {stream.kind!r}")
        if settings.stage != "finetune" and config.grad_cache_chunk:
            raise ConfigError(f"{path}: grad_cache_chunk: is for the contrastive (finetune) stage; alignment losses "
                              "are per sample")
        model_config = load_lusifer_config(config.model, config.model_overrides)
        if model_config.encoder.tokenizer is None:
            raise ConfigError(f"{path}: model_overrides: the model config names no encoder.tokenizer, which training needs")
        if config.lusifer.stage == "align" and model_config.llm_tokenizer is None:
            raise ConfigError(f"{path}: model_overrides: alignment targets need llm_tokenizer (the LLM's tokenizer)")
        if config.lusifer.stage == "align" and config.lusifer.llm != "frozen":
            raise ConfigError(f"{path}: lusifer.llm: the LLM stays frozen in alignment (paper, section 3), got "
                              f"{config.lusifer.llm!r}")
        dims = config.loss.matryoshka_dims
        if dims and dims[-1] != model_config.embed_dim:
            raise ConfigError(f"{path}: loss.matryoshka_dims: must end with the LLM width {model_config.embed_dim}")
        return model_config

    def build_model(self, phase: None, weights: Path | None) -> LusiferModel:
        with torch.random.fork_rng(devices=[]):  # the same initial weights (and adapters) on every rank
            torch.manual_seed(self.config.seed)
            model = create_lusifer_model(self.model_config, pretrained=weights is None)
            if weights is not None:  # a previous stage: LoRA already merged into plain weights
                checkpoint.load_weights(model, weights)
            model.lm_head.requires_grad_(False)
            for name in ("encoder", "llm"):
                training, part = getattr(self.settings, name), getattr(model, name)
                if training == "lora":
                    add_lora(part, name, self.settings.lora)
                else:
                    part.requires_grad_(training == "full")
        model.set_grad_checkpointing(self.config.gradient_checkpointing)
        return model

    def param_groups(self, model: LusiferModel) -> list[dict]:
        """One LR (``lr_text``) for every trained part; no weight decay on biases, norms and the token."""
        optimizer, groups = self.config.optimizer, []
        for tower in ("encoder", "connector", "llm"):
            params = [(n, p) for n, p in getattr(model, tower).named_parameters() if p.requires_grad]
            decay = [p for n, p in params if p.ndim >= 2]
            no_decay = [p for n, p in params if p.ndim < 2]
            for group, weight_decay in ((decay, optimizer.weight_decay), (no_decay, 0.0)):
                if group:
                    groups.append({"params": group, "weight_decay": weight_decay, "lr_scale": 1.0, "tower": tower,
                                   "lr": optimizer.lr_text})
        return groups

    def make_loader(self, model: LusiferModel, data: DataConfig, phase: None, rank: int,
                    world_size: int) -> MultiStreamLoader:
        tokenizer = load_tokenizer(self.model_config.encoder.tokenizer, self.model_config.encoder)
        self.mask_token_id = tokenizer.mask_token_id
        target_tokenizer = None
        if self.settings.stage == "align":
            from transformers import AutoTokenizer

            target_tokenizer = AutoTokenizer.from_pretrained(self.model_config.llm_tokenizer)
            if target_tokenizer.eos_token is None or target_tokenizer.pad_token_id is None:
                raise ConfigError(f"{self.model_config.llm_tokenizer}: the LLM tokenizer needs an EOS and a pad token")
            if self.mask_token_id is None and self.settings.mask_ratio > 0:
                raise ConfigError(f"{self.model_config.encoder.tokenizer}: masked reconstruction needs a <mask> token")
            self.special_ids = torch.tensor(tokenizer.all_special_ids)
        return MultiStreamLoader(data, tokenizer, rank=rank, world_size=world_size, target_tokenizer=target_tokenizer)

    def mask_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``mask_ratio`` of the real, non-special tokens replaced by ``<mask>`` (the torch RNG: resumable)."""
        maskable = attention_mask.bool() & ~torch.isin(input_ids, self.special_ids.to(input_ids.device))
        chosen = maskable & (torch.rand(input_ids.shape, device=input_ids.device) < self.settings.mask_ratio)
        return input_ids.masked_fill(chosen, self.mask_token_id)

    def step(self, engine, batches, dtype, device, backward) -> StepLosses:
        if self.settings.stage == "finetune":
            return self.contrastive_step(engine, batches, dtype, device, backward)
        losses = {}
        for name, batch in batches.items():
            batch = to_device(batch, device)
            if self.kinds[name] == "text":  # masked reconstruction
                source = self.mask_tokens(batch["text_ids"], batch["text_mask"]), batch["text_mask"]
                target = batch["text_target_ids"], batch["text_target_mask"]
            else:  # completion: query -> positive
                source = batch["query_ids"], batch["query_mask"]
                target = batch["positive_target_ids"], batch["positive_target_mask"]
            out = engine(input_ids=source[0], attention_mask=source[1], target_ids=target[0], target_mask=target[1])
            losses[name] = {"loss": out.loss}
        total = sum(self.config.loss.weights.get(name, 1.0) * out["loss"] for name, out in losses.items())
        backward(total, True)
        return total.detach(), {name: {"loss": out["loss"].detach()} for name, out in losses.items()}

    def logit_scale(self, model: LusiferModel, kind: str) -> torch.Tensor:
        """The model config's fixed temperature (0.05) for every text-text stream."""
        return torch.tensor(-math.log(model.config.temperature), device=model.connector.token.device)

    def scalars(self, module: LusiferModel, phase: None) -> dict[str, Any]:
        return {"temperature": {"text_text": module.config.temperature}} if self.settings.stage == "finetune" else {}

    def checkpoint_weights(self, module: LusiferModel, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return merge_lora(weights, self.settings.lora.alpha / self.settings.lora.r)
