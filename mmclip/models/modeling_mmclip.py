"""``AutoModel`` of an exported checkpoint: :class:`MMCLIP` as a ``PreTrainedModel`` with
jina-clip-v2's user API (``encode_text`` / ``encode_image`` -> normalised numpy embeddings).

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
from transformers import AutoTokenizer, PreTrainedModel
from transformers.utils import ModelOutput

from .attention import _has_module
from .clip import MMCLIP
from .configuration_mmclip import MMCLIPConfig
from .processing_mmclip import MMCLIPImageProcessor

logger = logging.getLogger(__name__)


@dataclass
class MMCLIPOutput(ModelOutput):
    """Full-width, unnormalised embeddings of whichever inputs were given."""

    text_embeds: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None


class MMCLIPModel(PreTrainedModel):
    config_class = MMCLIPConfig
    base_model_prefix = "clip"
    main_input_name = "input_ids"
    _supports_sdpa = True
    modalities = ("text", "image")

    def __init__(self, config: MMCLIPConfig):
        super().__init__(config)
        self.clip = MMCLIP(config.clip_config())
        backend = config.clip["attention_backend"]
        if backend == "auto" and not (_has_module("flash_attn") or _has_module("xformers")):
            logger.warning("flash_attn and xformers are not installed: attention runs on torch SDPA")
        self._tokenizer = None
        self._image_processor = None
        self.post_init()

    def _init_weights(self, module) -> None:
        """Nothing to draw: every parameter comes from the checkpoint (a missing one is an error)."""

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
    def tokenizer(self):
        if self._tokenizer is None:
            # trust_remote_code: AutoTokenizer reads config.json, whose auto_map is this code.
            self._tokenizer = AutoTokenizer.from_pretrained(self.name_or_path, trust_remote_code=True)
        return self._tokenizer

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

    def check_truncate_dim(self, truncate_dim: int | None) -> int:
        """The output width for ``truncate_dim``, which must be a configured Matryoshka dimension."""
        if truncate_dim is None:
            return self.clip.config.embed_dim
        if truncate_dim not in self.matryoshka_dims:
            raise ValueError(
                f"truncate_dim must be one of the Matryoshka dimensions {self.matryoshka_dims}, got {truncate_dim}"
            )
        return truncate_dim

    def _instruction(self, task: str | None) -> str:
        if task is None:
            return ""
        instructions = self.config.task_instructions
        if task not in instructions:
            raise ValueError(f"unknown task {task!r}; this model knows {sorted(instructions) or 'none'} (or task=None)")
        return instructions[task]

    @torch.inference_mode()
    def encode_text(
        self, sentences: str | list[str], task: str | None = None, batch_size: int = 32, truncate_dim: int | None = None
    ) -> np.ndarray:
        """``[N, dim]`` float32, L2-normalised after truncation (``[dim]`` for a single string).

        ``task`` prefixes its instruction (``config.task_instructions``). Texts are batched longest
        first, so each batch pads little, and returned in the input order.
        """
        single = isinstance(sentences, str)
        prefix = self._instruction(task)
        texts = [prefix + text for text in ([sentences] if single else sentences)]

        def embed(input_ids, attention_mask):
            return self.clip.encode_text(input_ids, attention_mask, truncate_dim=truncate_dim)

        out = encode_in_batches(self, texts, embed, self.check_truncate_dim(truncate_dim), batch_size)
        return out[0] if single else out

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
            embeds = self.clip.encode_image(pixels, truncate_dim=truncate_dim)
            out[start : start + len(batch)] = F.normalize(embeds.float(), dim=-1).cpu().numpy()
        return out[0] if single else out


def encode_in_batches(model: PreTrainedModel, texts: list[str], embed, dim: int, batch_size: int) -> np.ndarray:
    """``embed(input_ids, attention_mask)`` of ``texts`` tokenized by ``model.tokenizer``, as ``[N, dim]``
    L2-normalised float32 in input order; batched longest first, so each batch pads little."""
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for start in range(0, len(texts), batch_size):
        batch = order[start : start + batch_size]
        tokens = model.tokenizer(
            [texts[i] for i in batch],
            padding=True,
            truncation=True,
            max_length=model.config.context_length,
            return_tensors="pt",
            return_token_type_ids=False,
        ).to(model.device)
        embeds = embed(tokens["input_ids"], tokens["attention_mask"])
        out[batch] = F.normalize(embeds.float(), dim=-1).cpu().numpy()  # in fp32 even for bf16 weights
    return out
