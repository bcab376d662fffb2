"""Preprocessing of the exported checkpoint: the released jina-clip-v2 eval transform, batch
tokenization, and a processor pairing them (``AutoImageProcessor`` / ``AutoProcessor`` remote code).

Both are defined here, once: ``mmclip.data.transforms`` calls :func:`resize_center_crop` for
evaluation and ``mmclip.tokenizer`` calls :func:`tokenize_batch`, so an exported model sees exactly
the pixels and token ids the training side saw.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers import AutoTokenizer, BatchFeature, ProcessorMixin
from transformers.image_processing_base import ImageProcessingMixin

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def resize_center_crop(image: Image.Image, size: int) -> torch.Tensor:
    """Shortest side to ``size`` (PIL bicubic), center crop: ``uint8 [3, size, size]``.

    Two steps with torchvision's rounding (``Resize`` + ``CenterCrop`` on PIL images), pixel for
    pixel the released ``JinaCLIPImageProcessor``.
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    short, long = sorted(image.size)
    target = (size, int(size * long / short))
    image = image.resize(target if image.width <= image.height else target[::-1], Image.Resampling.BICUBIC)
    left, top = round((image.width - size) / 2), round((image.height - size) / 2)
    image = image.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.stack([np.asarray(band) for band in image.split()]))  # CHW, no transpose


def normalize(pixels: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``uint8`` pixels ``[..., 3, H, W]`` -> OpenAI-CLIP-normalised ``dtype`` (computed in float32)."""
    mean = torch.tensor(OPENAI_CLIP_MEAN, device=pixels.device).view(3, 1, 1) * 255
    std = torch.tensor(OPENAI_CLIP_STD, device=pixels.device).view(3, 1, 1) * 255
    return pixels.to(torch.float32, copy=True).sub_(mean).div_(std).to(dtype)


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


def load_image(image) -> Image.Image:
    """A PIL image, or a local file path, as an RGB image (errors name the file)."""
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    try:
        with Image.open(image) as opened:
            return opened.convert("RGB")
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"{image}: cannot read the image ({type(error).__name__}: {error})") from None


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
