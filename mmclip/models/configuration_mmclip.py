"""``config.json`` of an exported dual encoder: :class:`MMCLIPHFConfig`, a ``PretrainedConfig`` around
the architecture dataclass :class:`CLIPConfig`.

``AutoConfig`` reaches it through ``auto_map``; the architecture itself stays one dataclass
(``clip``), validated by the same checks as a training config.
"""

from __future__ import annotations

import dataclasses

from .configuration import CLIPConfig
from .configuration_base import EmbeddingHFConfig


class MMCLIPHFConfig(EmbeddingHFConfig):
    """``clip``: the :class:`CLIPConfig` fields; ``context_length`` and ``task_instructions`` as every export."""

    model_type = "mmclip"

    def __init__(self, clip: dict | None = None, **kwargs):
        self.clip = dataclasses.asdict(CLIPConfig(**(clip or {})))  # validated, with every default filled in
        super().__init__(**kwargs)

    def clip_config(self) -> CLIPConfig:
        return CLIPConfig(**self.clip)
