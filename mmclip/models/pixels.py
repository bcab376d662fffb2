"""The released jina-clip-v2 eval transform and CLIP normalisation: the one place pixels are
resized and normalised, for training's evaluation (``mmclip.data.transforms``), the exported
image processor (:mod:`.processing_mmclip`) and clip_benchmark alike. Torch and PIL only, so
reading shards does not import transformers.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

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


def load_image(image) -> Image.Image:
    """A PIL image, or a local file path, as an RGB image (errors name the file)."""
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    try:
        with Image.open(image) as opened:
            return opened.convert("RGB")
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"{image}: cannot read the image ({type(error).__name__}: {error})") from None
