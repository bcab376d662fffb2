"""``config.json`` of an exported LUSIFER checkpoint: a ``PretrainedConfig`` around :class:`LusiferConfig`.

``AutoConfig`` reaches it through ``auto_map``; the architecture (encoder, LLM and connector) stays
one dataclass (``lusifer``), validated by the same checks as a training config.
"""

from __future__ import annotations

import dataclasses

from transformers import PretrainedConfig

from .configuration import LusiferConfig


class LusiferHFConfig(PretrainedConfig):
    """``lusifer``: the :class:`LusiferConfig` fields (local paths removed); ``context_length``: the
    encoder tokenizer's ``max_length`` for ``encode_text``; ``task_instructions``: task -> prefix."""

    model_type = "mmclip_lusifer"
    has_no_defaults_at_init = True  # an LLM has no default size: transformers must not build an empty one

    def __init__(
        self,
        lusifer: dict | None = None,
        context_length: int = 512,
        task_instructions: dict[str, str] | None = None,
        **kwargs,
    ):
        self.lusifer = dataclasses.asdict(LusiferConfig(**(lusifer or {})))
        self.context_length = context_length
        self.task_instructions = dict(task_instructions or {})
        super().__init__(**kwargs)

    def lusifer_config(self) -> LusiferConfig:
        return LusiferConfig(**self.lusifer)
