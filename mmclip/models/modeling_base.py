"""The one interface of an exported mmclip model (``AutoModel.from_pretrained(DIR, trust_remote_code=True)``),
whichever family it is: jina-clip-v2's user API on a ``PreTrainedModel``.

* ``encode_text(sentences, task=None, batch_size=32, truncate_dim=None)`` -> L2-normalised float32
  numpy, batched longest first; ``task`` prefixes its instruction (``config.task_instructions``);
* ``encode_image(...)`` where ``"image" in model.modalities``;
* ``embed_dim``, ``matryoshka_dims``, ``check_truncate_dim``, ``tokenizer``;
* ``get_text_features(input_ids, attention_mask)`` (and ``get_image_features``): full-width,
  unnormalised tensors, for sentence-transformers and custom pipelines.

Search and evaluation use only this interface, so every family's export is indexed, searched and
scored the same way. A family's wrapper (``modeling_mmclip.MMCLIPHFModel``,
``modeling_lusifer.LusiferHFModel``) holds its torch module and says how to embed.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, PreTrainedModel

from .processing_mmclip import tokenize_batch


class EmbeddingHFModel(PreTrainedModel):
    main_input_name = "input_ids"
    _supports_sdpa = True
    modalities: tuple[str, ...] = ("text",)

    def __init__(self, config):
        super().__init__(config)
        self._tokenizer = None

    def _init_weights(self, module) -> None:
        """Nothing to draw: every parameter comes from the checkpoint (a missing one is an error)."""

    @property
    def embed_dim(self) -> int:
        raise NotImplementedError

    @property
    def matryoshka_dims(self) -> list[int]:
        """The widths a prefix of the embedding was trained at (the full width only, unless Matryoshka)."""
        return [self.embed_dim]

    def check_truncate_dim(self, truncate_dim: int | None) -> int:
        """The output width for ``truncate_dim``, which must be one of :attr:`matryoshka_dims`."""
        if truncate_dim is None:
            return self.embed_dim
        if truncate_dim not in self.matryoshka_dims:
            raise ValueError(
                f"truncate_dim must be one of the Matryoshka dimensions {self.matryoshka_dims}, got {truncate_dim}"
            )
        return truncate_dim

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            # trust_remote_code: AutoTokenizer reads config.json, whose auto_map is this code.
            self._tokenizer = AutoTokenizer.from_pretrained(self.name_or_path, trust_remote_code=True)
        return self._tokenizer

    def instruction(self, task: str | None) -> str:
        """The prefix of ``task`` (empty for None)."""
        if task is None:
            return ""
        instructions = self.config.task_instructions
        if task not in instructions:
            raise ValueError(f"unknown task {task!r}; this model knows {sorted(instructions) or 'none'} (or task=None)")
        return instructions[task]

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    @torch.inference_mode()
    def encode_text(
        self, sentences: str | list[str], task: str | None = None, batch_size: int = 32, truncate_dim: int | None = None
    ) -> np.ndarray:
        """``[N, dim]`` float32, L2-normalised after truncation (``[dim]`` for a single string).

        Texts are batched longest first, so each batch pads little, and returned in the input order.
        """
        single = isinstance(sentences, str)
        prefix = self.instruction(task)
        texts = [prefix + text for text in ([sentences] if single else sentences)]
        dim = self.check_truncate_dim(truncate_dim)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.zeros((len(texts), dim), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            batch = order[start : start + batch_size]
            tokens = tokenize_batch(self.tokenizer, [texts[i] for i in batch], self.config.context_length)
            ids, mask = (tokens[name].to(self.device) for name in ("input_ids", "attention_mask"))
            embeds = self.get_text_features(ids, mask)[..., :dim]
            out[batch] = F.normalize(embeds.float(), dim=-1).cpu().numpy()  # in fp32 even for bf16 weights
        return out[0] if single else out
