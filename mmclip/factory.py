"""``create_model``: a model config (YAML path, dict or CLIPConfig) to a ready MMCLIP."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

import torch

from .config import ConfigError, load_config
from .models import MMCLIP, CLIPConfig

logger = logging.getLogger(__name__)

# Config keys that name files or directories, checked before anything is built.
PATH_KEYS = ("pretrained", "vision.pretrained", "text.pretrained", "text.tokenizer")


def load_model_config(source: str | Path | dict[str, Any] | CLIPConfig, overrides: Iterable[str] = ()) -> CLIPConfig:
    """Read and validate a model config; every path it names must exist."""
    config = load_config(CLIPConfig, source, overrides)
    name = str(source) if isinstance(source, (str, Path)) else "<dict>"
    for key in PATH_KEYS:
        node: Any = config
        for part in key.split("."):
            node = getattr(node, part)
        if node is not None and not Path(node).exists():
            raise ConfigError(f"{name}: {key}: no such file or directory: {node}")
    return config


def create_model(
    config: str | Path | dict[str, Any] | CLIPConfig,
    *,
    overrides: Iterable[str] = (),
    device: str | torch.device | None = None,
    pretrained: bool = True,
) -> MMCLIP:
    """Build the dual encoder and load the weights its config names.

    ``device="meta"`` builds the full-size model without allocating weights (for counting).
    Outside weights come from ``pretrained`` (a whole dual encoder) or ``vision.pretrained`` /
    ``text.pretrained`` (one tower each), in any layout ``mmclip.weights`` detects.
    """
    config = load_model_config(config, overrides)
    with torch.device(device or "cpu"):
        model = MMCLIP(config)
    sources = (config.pretrained, config.vision.pretrained, config.text.pretrained)
    if not pretrained or torch.device(device or "cpu").type == "meta" or not any(sources):
        return model
    from . import weights

    if config.pretrained:
        layout = weights.load_clip_weights(model, config.pretrained)
        logger.info("loaded dual encoder from %s (%s layout)", config.pretrained, layout)
    if config.vision.pretrained:
        layout = weights.load_vision_weights(model.vision, config.vision.pretrained)
        logger.info("loaded vision tower from %s (%s layout)", config.vision.pretrained, layout)
    if config.text.pretrained:
        layout = weights.load_text_weights(model.text, config.text.pretrained, config.text.lora_adapter)
        logger.info("loaded text tower from %s (%s layout)", config.text.pretrained, layout)
    return model
