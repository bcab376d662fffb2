"""``config.json`` of an exported checkpoint: a ``PretrainedConfig`` around :class:`CLIPConfig`.

``AutoConfig`` reaches it through ``auto_map``; the architecture itself stays one dataclass
(``clip``), validated by the same checks as a training config.
"""

from __future__ import annotations

import dataclasses

from transformers import PretrainedConfig

from .configuration import CLIPConfig


class MMCLIPConfig(PretrainedConfig):
    """``clip``: the :class:`CLIPConfig` fields; ``context_length``: the tokenizer's ``max_length``
    for ``encode_text``; ``task_instructions``: task name -> prefix (jina-clip-v2's ``task=``)."""

    model_type = "mmclip"

    def __init__(
        self,
        clip: dict | None = None,
        context_length: int = 512,
        task_instructions: dict[str, str] | None = None,
        **kwargs,
    ):
        self.clip = dataclasses.asdict(CLIPConfig(**(clip or {})))  # validated, with every default filled in
        self.context_length = context_length
        self.task_instructions = dict(task_instructions or {})
        super().__init__(**kwargs)

    @property
    def projection_dim(self) -> int:
        """The embedding width, where sentence-transformers' ``get_sentence_embedding_dimension`` looks."""
        return self.clip["embed_dim"]

    def clip_config(self) -> CLIPConfig:
        return CLIPConfig(**self.clip)
