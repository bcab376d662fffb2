"""Tokenizers: load an XLM-R tokenizer directory, check it fits the text tower, tokenize a batch.

Training a small tokenizer for synthetic data lives with the synthetic corpus
(``data_pipelines.synthetic.tokenizer``)."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer, BatchEncoding, PreTrainedTokenizerBase

from .config import ConfigError
from .models import TextConfig
from .models.processing_mmclip import tokenize_batch


def load_tokenizer(path: str | Path, text_config: TextConfig | None = None) -> PreTrainedTokenizerBase:
    """``AutoTokenizer`` from a local directory, checked against the text tower it feeds."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as error:  # transformers' "can't load tokenizer" / "unrecognized" errors
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"{path}: not a tokenizer directory ({first_line})") from None
    if text_config is not None:
        if len(tokenizer) > text_config.vocab_size:
            raise ConfigError(
                f"{path}: text.vocab_size: the tokenizer has {len(tokenizer)} tokens, "
                f"the text tower only {text_config.vocab_size}"
            )
        if tokenizer.pad_token_id != text_config.pad_token_id:
            raise ConfigError(
                f"{path}: text.pad_token_id: the tokenizer pads with id {tokenizer.pad_token_id}, "
                f"the config says {text_config.pad_token_id}"
            )
    return tokenizer


def tokenize(tokenizer: PreTrainedTokenizerBase, texts: list[str], context_length: int) -> BatchEncoding:
    """``input_ids`` / ``attention_mask`` tensors, truncated to ``context_length`` and padded only
    to the batch's longest text, so short captions do not pay for a long stage's context."""
    return BatchEncoding(tokenize_batch(tokenizer, texts, context_length))
