"""``AutoModel`` of an exported LUSIFER checkpoint: :class:`LusiferHFModel`, the Hugging Face wrapper of
the torch module :class:`LusiferModel`, with the user API of :mod:`.modeling_base` (``encode_text``:
strings in, normalised numpy embeddings out, the LLM's width).

Loaded from a directory written by ``mmclip export`` with
``AutoModel.from_pretrained(DIR, trust_remote_code=True)``: ``model.safetensors`` holds the
weights under ``lusifer.`` with every LoRA adapter merged (no peft needed), the encoder's
tokenizer sits at the top of the directory, the LLM's in ``llm_tokenizer/``.
"""

from __future__ import annotations

import torch

from .configuration_lusifer import LusiferHFConfig
from .lusifer import LusiferModel
from .modeling_base import EmbeddingHFModel


class LusiferHFModel(EmbeddingHFModel):
    """Text only, trained at its full width only (``matryoshka_dims`` is ``[embed_dim]``)."""

    config_class = LusiferHFConfig
    base_model_prefix = "lusifer"
    modalities = ("text",)

    def __init__(self, config: LusiferHFConfig):
        super().__init__(config)
        self.lusifer = LusiferModel(config.lusifer_config(), lm_head=False)
        self.post_init()

    @property
    def embed_dim(self) -> int:
        return self.lusifer.config.embed_dim

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.lusifer.encode_text(input_ids, attention_mask, normalize=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.get_text_features(input_ids, attention_mask)
