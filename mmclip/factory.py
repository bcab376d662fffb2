"""``create_model``: a model config (YAML path, dict or CLIPConfig) to a ready MMCLIP; ``create_lusifer_model``
the same for LUSIFER. Our own checkpoints are read by :mod:`mmclip.checkpoint`."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import torch

from . import checkpoint
from .config import ConfigError, load_config
from .models.configuration import CLIPConfig, LusiferConfig

if TYPE_CHECKING:
    from .models import MMCLIP, LusiferModel

logger = logging.getLogger(__name__)

# Config keys that name files or directories (relative to the YAML naming them), checked before anything is built.
PATH_KEYS = CLIPConfig.FILE_RELATIVE
LUSIFER_PATH_KEYS = LusiferConfig.FILE_RELATIVE


def load_model_config(source: str | Path | dict[str, Any] | CLIPConfig, overrides: Iterable[str] = ()) -> CLIPConfig:
    """Read and validate a model config; every path it names must exist."""
    config = load_config(CLIPConfig, source, overrides)
    _check_paths(config, PATH_KEYS, source)
    return config


def _check_paths(config: Any, keys: Iterable[str], source: Any) -> None:
    """Every path the config names under ``keys`` (dotted) must exist."""
    name = str(source) if isinstance(source, (str, Path)) else "<dict>"
    for key in keys:
        node: Any = config
        for part in key.split("."):
            node = getattr(node, part)
        if node is not None and not Path(node).exists():
            raise ConfigError(f"{name}: {key}: no such file or directory: {node}")


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
    from .models.clip import MMCLIP

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


# --- LUSIFER -------------------------------------------------------------------------------------

def load_lusifer_config(source: str | Path | dict[str, Any] | LusiferConfig, overrides: Iterable[str] = ()) -> LusiferConfig:
    """Read and validate a LUSIFER model config; ``llm`` comes from ``llm_pretrained``'s config.json if given."""
    config = load_config(LusiferConfig, source, overrides)
    _check_paths(config, LUSIFER_PATH_KEYS, source)
    name = str(source) if isinstance(source, (str, Path)) else "<dict>"
    if config.llm_pretrained is not None:
        llm_json = Path(config.llm_pretrained) / "config.json"
        if not llm_json.is_file():
            raise ConfigError(f"{name}: llm_pretrained: {config.llm_pretrained} has no config.json")
        architecture = json.loads(llm_json.read_text())
        if architecture.get("model_type") != "mistral":
            raise ConfigError(f"{name}: llm_pretrained: {llm_json} is a {architecture.get('model_type')!r} model, not mistral")
        config.llm = {**architecture, **config.llm}  # keys set in the YAML win
    return config


def create_lusifer_model(config: str | Path | dict[str, Any] | LusiferConfig, overrides: Iterable[str] = (),
                         pretrained: bool = True) -> LusiferModel:
    """Build LUSIFER and load what its config names: the encoder from an HF XLM-R directory (or any
    layout ``mmclip.weights`` knows) or an mmclip checkpoint's text tower, the LLM and its head from
    a Mistral directory; the trainable token is then drawn at the LLM's input-embedding scale."""
    from transformers import MistralForCausalLM

    from .models.lusifer import LusiferModel

    config = load_lusifer_config(config, overrides)
    model = LusiferModel(config)
    if not pretrained:
        return model
    if config.encoder.pretrained:
        _load_encoder(model, Path(config.encoder.pretrained))
    if config.llm_pretrained:
        llm = MistralForCausalLM.from_pretrained(
            config.llm_pretrained, dtype=torch.float32, attn_implementation=config.attn_implementation
        )
        model.llm.load_state_dict(llm.model.state_dict())
        model.lm_head.load_state_dict(llm.lm_head.state_dict())
        logger.info("loaded the LLM from %s", config.llm_pretrained)
    with torch.no_grad():
        model.connector.token.normal_(std=float(model.llm.embed_tokens.weight.std()))
    return model


def _load_encoder(model: LusiferModel, path: Path) -> None:
    from . import weights

    if checkpoint.is_checkpoint(path):  # an mmclip checkpoint: its text tower
        state = checkpoint.read_weights(path)
        model.encoder.load_state_dict({k.removeprefix("text."): v for k, v in state.items() if k.startswith("text.")})
        logger.info("loaded the encoder from the text tower of %s", path)
        return
    layout = weights.load_text_weights(model.encoder, path, model.config.encoder.lora_adapter)
    logger.info("loaded the encoder from %s (%s layout)", path, layout)
