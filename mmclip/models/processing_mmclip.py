"""Preprocessing of the exported checkpoint: batch tokenization, and the image processor and
processor (``AutoImageProcessor`` / ``AutoProcessor`` remote code) over :mod:`.pixels`.

:func:`tokenize_batch` is defined here, once: ``mmclip.tokenizer`` calls it, as the processor does,
so an exported model sees exactly the token ids the training side saw (and, through
:mod:`.pixels`, the same pixels).
"""

from __future__ import annotations

import torch
from PIL import Image
from transformers import AutoTokenizer, BatchFeature, ProcessorMixin
from transformers.image_processing_base import ImageProcessingMixin

from .pixels import load_image, normalize, resize_center_crop


def tokenize_batch(tokenizer, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """``input_ids`` / ``attention_mask`` tensors of ``texts``, truncated to ``max_length`` and padded
    to the longest: what ``tokenizer(texts, padding=True, truncation=True, max_length=max_length,
    return_tensors="pt")`` returns.

    A fast tokenizer's Rust backend encodes the batch itself, with the settings transformers would
    give it: transformers' conversion of every text's encoding into Python lists took two thirds of
    the time for a batch of 64 short captions.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or tokenizer.pad_token_id is None:  # a slow tokenizer, or one that cannot pad
        tokens = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt",
                           return_token_type_ids=False)
        return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}
    # transformers sets these same fields before each of its own calls, so sharing the backend is safe.
    backend.enable_truncation(max_length, direction=tokenizer.truncation_side)
    backend.enable_padding(direction=tokenizer.padding_side, pad_id=tokenizer.pad_token_id,
                           pad_type_id=tokenizer.pad_token_type_id, pad_token=tokenizer.pad_token)
    encodings = backend.encode_batch(texts)
    return {
        "input_ids": torch.tensor([encoding.ids for encoding in encodings], dtype=torch.long),
        "attention_mask": torch.tensor([encoding.attention_mask for encoding in encodings], dtype=torch.long),
    }


class MMCLIPImageProcessor(ImageProcessingMixin):
    """PIL images (or paths) -> ``pixel_values [B, 3, size, size]`` float32, CLIP-normalised."""

    model_input_names = ["pixel_values"]  # noqa: RUF012 (the transformers attribute is a list)

    def __init__(self, size: int = 224, **kwargs):
        super().__init__(**kwargs)
        self.size = size

    def __call__(self, images, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        return self.preprocess(images)

    def preprocess(self, images, **kwargs) -> BatchFeature:
        if isinstance(images, (Image.Image, str)) or not isinstance(images, (list, tuple)):
            images = [images]
        pixels = [resize_center_crop(load_image(image), self.size) for image in images]
        return BatchFeature({"pixel_values": normalize(torch.stack(pixels))})


class MMCLIPProcessor(ProcessorMixin):
    """Texts through the tokenizer, images through :class:`MMCLIPImageProcessor` (sentence-transformers' entry)."""

    attributes = ["image_processor", "tokenizer"]  # noqa: RUF012 (the transformers attribute is a list)

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor, tokenizer, **kwargs)

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        # The image processor is this module's class: no second remote-code lookup.
        # The directory's code is already trusted: AutoTokenizer reads config.json's auto_map.
        kwargs["trust_remote_code"] = True
        return [
            MMCLIPImageProcessor.from_pretrained(pretrained_model_name_or_path),
            AutoTokenizer.from_pretrained(pretrained_model_name_or_path, **kwargs),
        ]

    def __call__(self, text=None, images=None, **kwargs) -> BatchFeature:
        if text is None and images is None:
            raise ValueError("MMCLIPProcessor needs text or images")
        features = {}
        if text is not None:
            max_length = kwargs.get("max_length") or self.tokenizer.model_max_length
            features.update(tokenize_batch(self.tokenizer, [text] if isinstance(text, str) else list(text), max_length))
        if images is not None:
            features.update(self.image_processor(images))
        return BatchFeature(features)
