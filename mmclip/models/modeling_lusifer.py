"""``AutoModel`` of an exported LUSIFER checkpoint: :class:`LusiferModel` as a ``PreTrainedModel``
with ``encode_text`` (strings in, normalised numpy embeddings out, the LLM's width).

Loaded from a directory written by ``mmclip export`` with
``AutoModel.from_pretrained(DIR, trust_remote_code=True)``: ``model.safetensors`` holds the
weights under ``lusifer.`` with every LoRA adapter merged (no peft needed), the encoder's
tokenizer sits at the top of the directory, the LLM's in ``llm_tokenizer/``.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import AutoTokenizer, PreTrainedModel

from .configuration_lusifer import LusiferHFConfig
from .lusifer import LusiferModel
from .modeling_mmclip import encode_in_batches


class LusiferHFModel(PreTrainedModel):
    config_class = LusiferHFConfig
    base_model_prefix = "lusifer"
    main_input_name = "input_ids"
    _supports_sdpa = True
    modalities = ("text",)

    def __init__(self, config: LusiferHFConfig):
        super().__init__(config)
        self.lusifer = LusiferModel(config.lusifer_config(), lm_head=False)
        self._tokenizer = None
        self.post_init()

    def _init_weights(self, module) -> None:
        """Nothing to draw: every parameter comes from the checkpoint (a missing one is an error)."""

    @property
    def embed_dim(self) -> int:
        return self.lusifer.config.embed_dim

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = AutoTokenizer.from_pretrained(self.name_or_path, trust_remote_code=True)
        return self._tokenizer

    def check_truncate_dim(self, truncate_dim: int | None) -> int:
        """LUSIFER is trained at its full width only: ``truncate_dim`` must be None or that width."""
        if truncate_dim not in (None, self.embed_dim):
            raise ValueError(f"LUSIFER embeddings are {self.embed_dim}-d only (no Matryoshka), got {truncate_dim}")
        return self.embed_dim

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.lusifer.encode_text(input_ids, attention_mask, normalize=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.get_text_features(input_ids, attention_mask)

    @torch.inference_mode()
    def encode_text(
        self, sentences: str | list[str], task: str | None = None, batch_size: int = 32, truncate_dim: int | None = None
    ) -> np.ndarray:
        """``[N, D]`` float32, L2-normalised (``[D]`` for a single string); ``task`` prefixes its
        instruction (``config.task_instructions``). Batched longest first, returned in input order."""
        single = isinstance(sentences, str)
        texts = [sentences] if single else list(sentences)
        if task is not None:
            if task not in self.config.task_instructions:
                raise ValueError(f"unknown task {task!r}; this model knows {sorted(self.config.task_instructions) or 'none'}")
            texts = [self.config.task_instructions[task] + text for text in texts]
        out = encode_in_batches(self, texts, self.get_text_features, self.check_truncate_dim(truncate_dim), batch_size)
        return out[0] if single else out
