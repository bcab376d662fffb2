"""What every exported model's ``config.json`` holds beside its architecture: the tokenizer's
``max_length`` for ``encode_text`` and the task instructions (jina-clip-v2's ``task=``)."""

from __future__ import annotations

from transformers import PretrainedConfig


class EmbeddingHFConfig(PretrainedConfig):
    """``context_length``: the tokenizer's ``max_length`` for ``encode_text``; ``task_instructions``:
    task name -> prefix. Subclasses add their architecture dataclass's fields."""

    def __init__(self, context_length: int = 512, task_instructions: dict[str, str] | None = None, **kwargs):
        self.context_length = context_length
        self.task_instructions = dict(task_instructions or {})
        super().__init__(**kwargs)
