"""``AutoModel`` of an exported dual encoder: :class:`MMCLIPHFModel`, the Hugging Face wrapper of the
torch module :class:`MMCLIP`, with jina-clip-v2's user API (:mod:`.modeling_base`: ``encode_text``;
here also ``encode_image``).

Loaded from a directory written by ``mmclip export`` with
``AutoModel.from_pretrained(DIR, trust_remote_code=True)``; the tokenizer and the image processor
are read from the same directory on first use. Weights are safetensors (``clip.`` + MMCLIP's own
names), so loading never unpickles.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers.utils import ModelOutput

from .attention import _has_module
from .clip import MMCLIP
from .configuration_mmclip import MMCLIPHFConfig
from .modeling_base import EmbeddingHFModel
from .processing_mmclip import MMCLIPImageProcessor

logger = logging.getLogger(__name__)


@dataclass
class MMCLIPOutput(ModelOutput):
    """Full-width, unnormalised embeddings of whichever inputs were given."""

    text_embeds: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None


class MMCLIPHFModel(EmbeddingHFModel):
    config_class = MMCLIPHFConfig
    base_model_prefix = "clip"
    modalities = ("text", "image")

    def __init__(self, config: MMCLIPHFConfig):
        super().__init__(config)
        self.clip = MMCLIP(config.clip_config())
        backend = config.clip["attention_backend"]
        if backend == "auto" and not (_has_module("flash_attn") or _has_module("xformers")):
            logger.warning("flash_attn and xformers are not installed: attention runs on torch SDPA")
        self._image_processor = None
        self.post_init()

    # --- tensors in, tensors out (sentence-transformers and custom pipelines) ----------------------

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.clip.encode_text(input_ids, attention_mask)

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(pixel_values.to(self.dtype))

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
    ) -> MMCLIPOutput:
        return MMCLIPOutput(
            text_embeds=None if input_ids is None else self.get_text_features(input_ids, attention_mask),
            image_embeds=None if pixel_values is None else self.get_image_features(pixel_values),
        )

    # --- the user API: strings, PIL images or paths in, numpy out ----------------------------------

    @property
    def image_processor(self) -> MMCLIPImageProcessor:
        if self._image_processor is None:
            self._image_processor = MMCLIPImageProcessor.from_pretrained(self.name_or_path)
        return self._image_processor

    @property
    def embed_dim(self) -> int:
        return self.clip.config.embed_dim

    @property
    def matryoshka_dims(self) -> list[int]:
        return list(self.clip.config.matryoshka_dims)

    @torch.inference_mode()
    def encode_image(self, images, batch_size: int = 32, truncate_dim: int | None = None) -> np.ndarray:
        """``[N, dim]`` float32 for PIL images or file paths (``[dim]`` for a single one)."""
        single = not isinstance(images, (list, tuple))
        images = [images] if single else list(images)
        dim = self.check_truncate_dim(truncate_dim)
        out = np.zeros((len(images), dim), dtype=np.float32)
        for start in range(0, len(images), batch_size):
            batch = [str(image) if isinstance(image, Path) else image for image in images[start : start + batch_size]]
            pixels = self.image_processor(batch)["pixel_values"].to(self.device, self.dtype)
            embeds = self.get_image_features(pixels)[..., :dim]
            out[start : start + len(batch)] = F.normalize(embeds.float(), dim=-1).cpu().numpy()
        return out[0] if single else out
