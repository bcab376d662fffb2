"""Image transforms: the released model's eval transform and Jina's training crop, made fast.

The eval transform itself lives in ``mmclip.models.pixels`` (exported as remote code).
Both turn an encoded image into a ``uint8`` tensor ``[3, size, size]``; :func:`normalize` applies
OpenAI CLIP's mean and std, best on the device: the batch crossing from the worker is then 4x
smaller than float32, and the division is free there.

* eval: shortest side resized to ``size`` (PIL bicubic), center crop, pixel for pixel the
  released ``JinaCLIPImageProcessor`` (torchvision ``Resize`` + ``CenterCrop`` on PIL images);
* train: ``RandomResizedCrop(size, scale=(0.9, 1.0), bicubic)`` as Jina's training fork, the crop
  drawn from an explicit ``random.Random`` (a resumed run repeats it), resized by torch's uint8
  antialiased bicubic (PIL's within a few levels, mean 0.02; about 3x faster).

Fast decode (``reduced_decode``, on in training, off by default so that eval is exact): a JPEG is
decoded at 1/2, 1/4 or 1/8 scale in the DCT domain (``Image.draft``) when the region feeding the
output is at least that many times ``size`` on its short side, so the final resize still only
shrinks. From a 1024x768 photo at 224 px this skips most of the decode and of the resize; the
result differs from a full decode by about half a grey level on average.
"""

from __future__ import annotations

import io
import math
import random
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from ..models.pixels import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, normalize, resize_center_crop  # noqa: F401
from .formats import BadSample

TRAIN_SCALE = (0.9, 1.0)  # jina-ai/openclip's RandomResizedCrop range
TRAIN_RATIO = (3 / 4, 4 / 3)  # torchvision's default


class ImageTransform:
    """Encoded image (or a PIL image) -> ``uint8`` tensor ``[3, size, size]``; picklable for workers.

    ``rng`` draws the training crop (a fresh unseeded one when omitted).

    Unusable images raise :class:`BadSample` with reason ``corrupt_image``, ``truncated_image`` or
    ``decompression_bomb`` (more than ``max_pixels`` pixels, known from the header before decoding).
    """

    def __init__(self, size: int, train: bool, max_pixels: int = 64 * 2**20, reduced_decode: bool = False):
        self.size, self.train, self.max_pixels, self.reduced_decode = size, train, max_pixels, reduced_decode

    def __call__(self, image: bytes | Image.Image, rng: random.Random | None = None) -> torch.Tensor:
        if not isinstance(image, Image.Image):
            image = open_image(image, self.max_pixels)
        elif image.width * image.height > self.max_pixels:
            raise BadSample("decompression_bomb", f"{image.width}x{image.height} pixels")
        if self.train:
            return self._random_resized_crop(image, rng or random.Random())
        return self._resize_center_crop(image)

    def _random_resized_crop(self, image: Image.Image, rng: random.Random) -> torch.Tensor:
        box = random_resized_crop_box(image.width, image.height, TRAIN_SCALE, TRAIN_RATIO, rng)
        # Snap the crop to the pixel grid of the reduced decode (by less than 1/size of it), whether
        # or not that decode is used: the crop is then whole pixels at either scale, and the decode
        # scale changes nothing but the decoding.
        grid = self._reduction(min(box[2] - box[0], box[3] - box[1]))
        left, top, right, bottom = (v // grid * grid for v in box)
        image, reduction = self._decode(image, grid)
        with warnings.catch_warnings():  # a read-only array: fine, the crop is only read
            warnings.simplefilter("ignore", UserWarning)
            pixels = torch.from_numpy(np.asarray(image)).permute(2, 0, 1)  # CHW view of the HWC pixels
        crop = pixels[:, top // reduction : bottom // reduction, left // reduction : right // reduction]
        # torch's uint8 antialiased bicubic: PIL's within a few levels (mean 0.02), at a third of its cost.
        return F.interpolate(crop[None], (self.size, self.size), mode="bicubic", antialias=True)[0]

    def _resize_center_crop(self, image: Image.Image) -> torch.Tensor:
        image, _ = self._decode(image, self._reduction(min(image.size)))
        return resize_center_crop(image, self.size)

    def _reduction(self, region: int) -> int:
        """The JPEG decode scale 1/s for ``region`` source pixels: the largest s in 8, 4, 2 keeping ``size``."""
        return next((s for s in (8, 4, 2) if region >= s * self.size), 1)

    def _decode(self, image: Image.Image, reduction: int) -> tuple[Image.Image, int]:
        """The RGB pixels, decoded at 1/``reduction`` scale where possible, and the scale used."""
        width, height = image.size
        used = 1
        if self.reduced_decode and reduction > 1:  # only JPEG implements draft; other formats ignore it
            drafted = image.draft("RGB", (width // reduction, height // reduction))
            if drafted is not None:
                used = round(width / drafted[1][2])  # drafted: (mode, source box in decoded pixels)
        try:
            image.load()
            return (image if image.mode == "RGB" else image.convert("RGB")), used
        except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, ... on broken data
            reason = "truncated_image" if "truncated" in str(error) else "corrupt_image"
            raise BadSample(reason, f"{type(error).__name__}: {error}") from None


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Read the header only; refuse images over ``max_pixels`` before any pixel is decoded."""
    try:
        with warnings.catch_warnings():  # our own cap below is stricter than PIL's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise BadSample("decompression_bomb", str(error)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise BadSample("corrupt_image", f"{type(error).__name__}: {error}") from None
    if image.width * image.height > max_pixels:
        raise BadSample("decompression_bomb", f"{image.width}x{image.height} pixels")
    return image


def random_resized_crop_box(
    width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float], rng: random.Random
) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop.get_params`` drawing from ``rng``; (left, top, right, bottom)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target_area * aspect)), round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top, left = rng.randint(0, height - h), rng.randint(0, width - w)
            return left, top, left + w, top + h
    # Fallback: the central crop closest to the allowed ratios.
    if width / height < min(ratio):
        w, h = width, round(width / min(ratio))
    elif width / height > max(ratio):
        w, h = round(height * max(ratio)), height
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return left, top, left + w, top + h
