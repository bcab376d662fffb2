"""Held-out image <-> text retrieval per language, scored by clip_benchmark's own metric.

Reads clip_benchmark's multilingual layout (``docs/data.md``, "Evaluation layouts"): under a root,
``crossmodal3600_captions-{lang}.json`` or ``xtd10-{lang}.json`` files of ``{"image_paths": [...]
(relative to the root), "annotations": [one caption per image], "indices": [...]}``. Images get
the released model's eval transform (shortest side bicubic-resized, center crop, CLIP
normalisation) at the vision tower's current size; recall@k in both directions comes from
``clip_benchmark.metrics.zeroshot_retrieval.evaluate`` through a small adapter, so the numbers
are clip_benchmark's, not a re-implementation::

    metrics = evaluate_retrieval(model, "DIR/eval/clip_benchmark", tokenizer, context_length=64)
    metrics["de"]["image_retrieval_recall@5"]   # text -> image: the caption finds its image
    metrics["de"]["text_retrieval_recall@5"]    # image -> text: the image finds its caption
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mmclip.data.transforms import ImageTransform, normalize
from mmclip.tokenizer import tokenize

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from mmclip.models import MMCLIP

# Preferred first: crossmodal3600 knows every synthetic language (hi, ar; Japanese as "ja").
ANNOTATION_PATTERNS = (r"crossmodal3600_captions-(?P<lang>[\w-]+)\.json", r"xtd10-(?P<lang>[\w-]+)\.json")
LANGUAGE_ALIASES = {"jp": "ja"}  # xtd10's name for Japanese
RECALL_K = (1, 5, 10)


def find_annotation_files(root: str | Path) -> dict[str, Path]:
    """Language -> annotation file under ``root`` (crossmodal3600 naming wins over xtd10's)."""
    root = Path(root)
    files: dict[str, Path] = {}
    for pattern in ANNOTATION_PATTERNS:
        for path in sorted(root.iterdir()):
            match = re.fullmatch(pattern, path.name)
            if match:
                files.setdefault(LANGUAGE_ALIASES.get(match["lang"], match["lang"]), path)
    if not files:
        raise FileNotFoundError(f"{root}: no crossmodal3600_captions-*.json or xtd10-*.json annotation files")
    return dict(sorted(files.items()))


def read_annotations(path: str | Path) -> list[tuple[str, list[str]]]:
    """``(image path relative to the file's directory, [captions])`` per image, in ``indices`` order."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    paths, annotations = data["image_paths"], data["annotations"]
    if len(paths) != len(annotations):
        raise ValueError(f"{path}: {len(paths)} image_paths but {len(annotations)} annotations")
    indices = data.get("indices", range(len(paths)))
    # xtd10 has one caption per image; crossmodal3600 proper may list several.
    return [(paths[i], [annotations[i]] if isinstance(annotations[i], str) else list(annotations[i])) for i in indices]


class CaptionedImages(Dataset):
    """``(normalised image [3, S, S], [captions])`` pairs; decoded pixels are shared through ``cache``."""

    def __init__(self, root: Path, items: list[tuple[str, list[str]]], transform: ImageTransform, cache: dict):
        self.root, self.items, self.transform, self.cache = root, items, transform, cache

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, list[str]]:
        path, captions = self.items[index]
        if path not in self.cache:  # every language captions the same images: decode each once
            self.cache[path] = self.transform((self.root / path).read_bytes())
        return normalize(self.cache[path]), captions


def collate(batch: list[tuple[torch.Tensor, list[str]]]) -> tuple[torch.Tensor, list[list[str]]]:
    images, captions = zip(*batch)
    return torch.stack(images), list(captions)


class Tokenize:
    """clip_benchmark's tokenizer interface: a list of strings -> something with ``.to(device)``."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, context_length: int):
        self.tokenizer, self.context_length = tokenizer, context_length

    def __call__(self, texts: list[str]) -> Any:
        return tokenize(self.tokenizer, texts, self.context_length)


class BenchmarkModel(nn.Module):
    """clip_benchmark's model interface over MMCLIP: ``encode_text`` takes the tokenizer's batch.

    ``image_cache``: a dict that the adapters of one model share across languages and widths. Each
    image (by its pixels) is then encoded once, at the full width, and every width takes its prefix:
    clip_benchmark encodes a set's images again for each language and each ``--model`` width.
    """

    def __init__(self, model: MMCLIP, truncate_dim: int | None = None, image_cache: dict | None = None):
        super().__init__()
        self.model, self.truncate_dim, self.image_cache = model, truncate_dim, image_cache

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.image_cache is None:
            return self.model.encode_image(pixel_values, truncate_dim=self.truncate_dim)
        rows = pixel_values.detach().cpu().contiguous().view(torch.uint8).numpy()  # any dtype's bytes, one copy
        keys = [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in rows]
        new = [i for i, key in enumerate(keys) if key not in self.image_cache]
        if new:
            self.image_cache.update(zip((keys[i] for i in new), self.model.encode_image(pixel_values[new])))
        return self.model.truncate(torch.stack([self.image_cache[key] for key in keys]), self.truncate_dim)

    def encode_text(self, tokens: Any) -> torch.Tensor:
        return self.model.encode_text(tokens["input_ids"], tokens["attention_mask"], truncate_dim=self.truncate_dim)


def evaluate_retrieval(
    model: MMCLIP,
    root: str | Path,
    tokenizer: PreTrainedTokenizerBase,
    *,
    context_length: int = 77,
    image_size: int | None = None,
    languages: Iterable[str] | None = None,
    truncate_dim: int | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    amp: bool = False,
    recall_k: Iterable[int] = RECALL_K,
) -> dict[str, dict[str, float]]:
    """``{lang: {"image_retrieval_recall@k": ..., "text_retrieval_recall@k": ...}}`` for each language.

    ``image_size`` defaults to the vision tower's current size (a stage's resolution). The model
    is put in eval mode for the call (no patch dropout) and given back in its previous mode.
    """
    from clip_benchmark.metrics import zeroshot_retrieval  # heavy import: only when evaluating
    from tqdm import tqdm

    root = Path(root)
    files = find_annotation_files(root)
    if languages is not None:
        missing = sorted(set(languages) - set(files))
        if missing:
            raise ValueError(f"{root}: no annotation file for {missing}; found {sorted(files)}")
        files = {lang: files[lang] for lang in languages}
    transform = ImageTransform(image_size or model.config.vision.image_size, train=False)
    pixels, embeddings = {}, {}  # every language captions the same images: each is decoded and encoded once
    adapter, tokenize = BenchmarkModel(model, truncate_dim, image_cache=embeddings), Tokenize(tokenizer, context_length)
    was_training = model.training
    model.eval()
    # clip_benchmark draws a progress bar per language; TQDM_DISABLE no longer reaches a tqdm that
    # transformers imported first, so its module-level name is swapped for a silent one meanwhile.
    progress_bar, zeroshot_retrieval.tqdm = zeroshot_retrieval.tqdm, partial(tqdm, disable=True)
    try:
        results = {}
        for lang, path in files.items():
            dataset = CaptionedImages(path.parent, read_annotations(path), transform, pixels)
            loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
            metrics = zeroshot_retrieval.evaluate(
                adapter, loader, tokenize, device, amp=amp, recall_k_list=list(recall_k)
            )
            results[lang] = {key: float(value) for key, value in sorted(metrics.items())}
        return results
    finally:
        zeroshot_retrieval.tqdm = progress_bar
        model.train(was_training)
