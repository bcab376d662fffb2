"""The jina-clip-v2 data filters (paper section 3.1), one check each.

A check returns ``None`` to keep a sample or a :class:`Reject` naming why not; the builder records
every reject in the shard set's ``skipped.jsonl``. Checks are pure, except the stateful
:class:`Unique` (duplicates) and :class:`SimilarityScorer` (which runs a model).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import imagehash
from PIL import Image

from mmclip.data.fields import identify_language  # noqa: F401  (the builder's language check uses it)

# Scripts written without spaces between words, and roughly how many characters make a word:
# CJK ideographs and kana average under two, Thai and its neighbours (counting vowel and tone
# marks) about four. Hangul is spaced, so it counts like Latin.
_UNSPACED_SCRIPTS = (
    (re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]+"), 2),
    (re.compile(r"[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff]+"), 4),  # Thai, Lao, Myanmar, Khmer
)


class Reject(Exception):
    """Why a sample is left out: a short stable ``reason`` tag and a human ``detail``.

    Checks return it; it is an exception so the builder can raise it out of nested steps.
    """

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason, detail)  # both in args, so it pickles across worker processes
        self.reason, self.detail = reason, detail


def count_words(text: str) -> int:
    """Words in ``text``: whitespace-separated tokens with a letter or digit, plus, for runs of an
    unspaced script (Chinese, Japanese, Thai, ...), one word per 2 (CJK) or 4 (Thai) characters."""
    words = 0
    for pattern, chars_per_word in _UNSPACED_SCRIPTS:
        words += sum(math.ceil(len(run) / chars_per_word) for run in pattern.findall(text))
        text = pattern.sub(" ", text)
    return words + sum(any(char.isalnum() for char in token) for token in text.split())


def check_words(text: str, min_words: int) -> Reject | None:
    words = count_words(text)
    if words < min_words:
        return Reject("short_caption", f"{words} words < {min_words}")
    return None


def check_aspect_ratio(width: int, height: int, max_ratio: float | None) -> Reject | None:
    ratio = max(width, height) / max(min(width, height), 1)
    if max_ratio and ratio > max_ratio:
        return Reject("aspect_ratio", f"{width}x{height}: {ratio:.2f} > {max_ratio}")
    return None


def check_language(
    language: str | None, confidence: float, allowed: frozenset[str] | None, min_confidence: float
) -> Reject | None:
    if allowed and language not in allowed:
        return Reject("language_not_allowed", f"{language} not in {','.join(sorted(allowed))}")
    if confidence < min_confidence:
        return Reject("low_language_confidence", f"{language} at {confidence:.2f} < {min_confidence}")
    return None


def image_hash(image: Image.Image) -> str:
    """Perceptual hash (64-bit pHash): equal for resized, re-encoded or lightly edited copies."""
    return str(imagehash.phash(image))


class Unique:
    """Rejects every value seen before (first one wins) with ``reason``: duplicate images by hash, keys."""

    def __init__(self, reason: str):
        self.reason = reason
        self._seen: set[str] = set()

    def __call__(self, value: str) -> Reject | None:
        if value in self._seen:
            return Reject(self.reason, f"{value} seen before")
        self._seen.add(value)
        return None


def top_fraction(scores: list[float], keep: float) -> set[int]:
    """Indices of the ``round(keep * len(scores))`` highest scores (halves round up; ties keep the earlier)."""
    count = int(keep * len(scores) + 0.5)
    ranked = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return set(ranked[:count])


class SimilarityScorer:
    """Image-caption cosine similarity under any CLIP model ``mmclip.create_model`` builds.

    Images get mmclip's eval transform at the model's ``image_size``: shortest side bicubic-resized,
    center crop, OpenAI CLIP mean/std. Imports are local: only builds that score pay for torch and
    transformers.
    """

    def __init__(self, config: str | Path, tokenizer: str | Path | None = None, max_tokens: int = 77):
        import torch

        from mmclip import create_model, load_model_config
        from mmclip.data.transforms import ImageTransform
        from mmclip.tokenizer import load_tokenizer

        config = load_model_config(config)
        tokenizer = tokenizer or config.text.tokenizer
        if tokenizer is None:
            raise ValueError("the similarity model's config names no text.tokenizer; pass --similarity-tokenizer")
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        # A config without weights (smoke tests) initialises randomly: seed it so builds repeat.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.model = create_model(config).to(self.device).eval()
        self.tokenizer = load_tokenizer(tokenizer, config.text)
        self.max_tokens = max_tokens
        self.transform = ImageTransform(config.vision.image_size, train=False)

    def __call__(self, images: list[bytes], captions: list[str]) -> list[float]:
        import torch

        from mmclip.data.transforms import normalize

        pixels = normalize(torch.stack([self.transform(image) for image in images]).to(self.device))
        tokens = self.tokenizer(
            captions, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        ).to(self.device)
        with torch.inference_mode():
            image_embeds = self.model.encode_image(pixels, normalize=True)
            text_embeds = self.model.encode_text(tokens["input_ids"], tokens["attention_mask"], normalize=True)
        return (image_embeds * text_embeds).sum(-1).tolist()
