"""Records of one kind -> batches of tensors: images decoded per sample, texts tokenized per batch.

Batches (``B`` samples, ``L`` the longest text of that field in the batch, at most the context length):

============= ==============================================================================
kind          tensors
============= ==============================================================================
image_text    ``pixel_values`` [B, 3, S, S] uint8 (the training step normalises them on the
              device), ``input_ids`` / ``attention_mask`` [B, L]
text_pair     ``query_ids`` / ``query_mask``, ``positive_ids`` / ``positive_mask`` [B, L]
text_triplet  as text_pair, plus ``negative_ids`` / ``negative_mask`` [B, N, L] (N negatives)
text          ``text_ids`` / ``text_mask`` [B, L]
============= ==============================================================================

With a ``target_tokenizer`` (LUSIFER's alignment: the LLM's tokenizer), the texts a language model
is asked to produce (``text``, ``positive``) are also tokenized by it, ending with its EOS token:
``text_target_ids`` / ``text_target_mask``, ``positive_target_ids`` / ``positive_target_mask``.

Texts are padded to the longest in the batch, not to the context length: captions and pairs are
mostly far shorter than 512 tokens in stages 2 and 3, and every pad token costs a full forward.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import torch

from .formats import BadSample, ImageText, Record, Text, TextTriplet
from ..tokenizer import tokenize
from .transforms import ImageTransform

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# Text field of a sample -> (ids, mask) names in the batch.
TEXT_OUTPUTS = {
    "caption": ("input_ids", "attention_mask"),
    "query": ("query_ids", "query_mask"),
    "positive": ("positive_ids", "positive_mask"),
    "negatives": ("negative_ids", "negative_mask"),
    "text": ("text_ids", "text_mask"),
}
TARGET_FIELDS = ("text", "positive")  # what an LM target can be: a text to reconstruct, a passage to complete


class BatchBuilder:
    """``sample(record, seed)`` per record (may raise :class:`BadSample`), ``batch(samples)`` per batch."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        context_length: int,
        image_transform: ImageTransform | None = None,
        num_negatives: int = 7,
        target_tokenizer: PreTrainedTokenizerBase | None = None,
    ):
        self.tokenizer, self.context_length = tokenizer, context_length
        self.image_transform, self.num_negatives = image_transform, num_negatives
        self.target_tokenizer = target_tokenizer

    def sample(self, record: Record, seed: int) -> dict[str, Any]:
        if isinstance(record, ImageText):
            return {"caption": record.caption, "pixels": self.image_transform(record.image, random.Random(seed))}
        if isinstance(record, Text):
            return {"text": record.text}
        sample = {"query": record.query, "positive": record.positive}
        if isinstance(record, TextTriplet):
            if len(record.negatives) < self.num_negatives:
                raise BadSample("too_few_negatives", f"{record.key}: {len(record.negatives)} < {self.num_negatives}")
            sample["negatives"] = record.negatives[: self.num_negatives]
        return sample

    def batch(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = {}
        for field, (ids_name, mask_name) in TEXT_OUTPUTS.items():
            if field in samples[0]:
                texts = [s[field] for s in samples]
                flat = [t for group in texts for t in group] if field == "negatives" else texts
                ids, mask = self._tokenize(flat)
                shape = (len(samples), self.num_negatives, -1) if field == "negatives" else (len(samples), -1)
                batch[ids_name], batch[mask_name] = ids.view(shape), mask.view(shape)
                if field in TARGET_FIELDS and self.target_tokenizer is not None:
                    eos = self.target_tokenizer.eos_token
                    target = tokenize(self.target_tokenizer, [text + eos for text in texts], self.context_length)
                    batch[f"{field}_target_ids"], batch[f"{field}_target_mask"] = target["input_ids"], target["attention_mask"]
        if "pixels" in samples[0]:
            batch["pixel_values"] = torch.stack([s["pixels"] for s in samples])
        return batch

    def _tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        encoded = tokenize(self.tokenizer, texts, self.context_length)
        return encoded["input_ids"], encoded["attention_mask"]
