"""``config.json`` of an exported LUSIFER checkpoint: :class:`LusiferHFConfig`, a ``PretrainedConfig``
around the architecture dataclass :class:`LusiferConfig`.

``AutoConfig`` reaches it through ``auto_map``; the architecture (encoder, LLM and connector) stays
one dataclass (``lusifer``), validated by the same checks as a training config.
"""

from __future__ import annotations

import dataclasses

from .configuration import LusiferConfig
from .configuration_base import EmbeddingHFConfig


class LusiferHFConfig(EmbeddingHFConfig):
    """``lusifer``: the :class:`LusiferConfig` fields (local paths removed); ``context_length`` and
    ``task_instructions`` as every export."""

    model_type = "mmclip_lusifer"
    has_no_defaults_at_init = True  # an LLM has no default size: transformers must not build an empty one

    def __init__(self, lusifer: dict | None = None, **kwargs):
        self.lusifer = dataclasses.asdict(LusiferConfig(**(lusifer or {})))
        super().__init__(**kwargs)

    def lusifer_config(self) -> LusiferConfig:
        return LusiferConfig(**self.lusifer)
