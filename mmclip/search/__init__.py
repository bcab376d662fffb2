"""Multilingual image / text search over an exported model (``mmclip search index|query|serve``).

    index = build_index("runs/hf", images=["photos/"], output="photos.index")
    hits = query("photos.index", text="ein roter Würfel", k=5)   # [{"rank", "score", "path", ...}]

The model is an ``mmclip export`` directory of any family, loaded with ``AutoModel`` (remote code
shipped in it) and used through the one exported-model interface (``mmclip.models.modeling_base``):
a LUSIFER export indexes and searches texts as the dual encoder does.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .index import IMAGE_SUFFIXES, MAX_K, SearchError, SearchIndex, model_fingerprint, resolve_kind

logger = logging.getLogger(__name__)

MAX_QUERY_CHARS = 1000

__all__ = ["MAX_K", "MAX_QUERY_CHARS", "SearchError", "SearchIndex", "build_index", "load_model", "query", "search"]


def load_model(model_dir: str | Path):
    from transformers import AutoModel

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise SearchError(f"{model_dir}: not an exported model (no config.json); create one with mmclip export")
    return AutoModel.from_pretrained(str(model_dir), trust_remote_code=True).eval()


def find_images(root: Path) -> tuple[list[Path], list[dict]]:
    """Image files under ``root`` (sorted), and symlinks that lead outside it (skipped)."""
    root_resolved = root.resolve()
    found, outside = [], []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if not path.resolve().is_relative_to(root_resolved):
            outside.append({"path": str(path), "reason": f"symlink out of {root}"})
            continue
        found.append(path)
    return found, outside


def _read_images(paths: list[Path], skipped: list[dict]):
    from PIL import Image

    images, kept = [], []
    for path in paths:
        try:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
            kept.append(path)
        except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, ... on broken files
            skipped.append({"path": str(path), "reason": f"{type(error).__name__}: {error}"})
    return images, kept


def build_index(
    model_dir: str | Path,
    *,
    images: list[str | Path] = (),
    texts: str | Path | None = None,
    output: str | Path,
    truncate_dim: int | None = None,
    kind: str = "auto",
    batch_size: int = 32,
    progress: bool = True,
) -> dict:
    """Create ``output`` or add to it; only files (and texts) it does not hold yet are embedded.

    Returns ``{"added", "skipped", "total"}``; unreadable images are skipped and listed.
    """
    from tqdm import tqdm

    model_dir, output = Path(model_dir), Path(output)
    model = load_model(model_dir)
    if (output / "meta.json").exists():
        index = SearchIndex.load(output)
        index.check_model(model_dir, truncate_dim)
    else:
        dim = model.check_truncate_dim(truncate_dim)
        index = SearchIndex(model=str(model_dir.resolve()), fingerprint=model_fingerprint(model_dir), dim=dim)
    truncate_dim = None if index.dim == model.embed_dim else index.dim
    if images and "image" not in model.modalities:
        raise SearchError(f"{model_dir}: a {'/'.join(model.modalities)} model: it cannot index images")

    known_paths = {item["path"] for item in index.items if item["type"] == "image"}
    new_files, skipped = [], []
    for root in map(Path, images):
        if not root.is_dir():
            raise SearchError(f"{root}: not a directory of images")
        root_name = str(root.resolve())
        if root_name not in index.roots:
            index.roots.append(root_name)
        files, outside = find_images(root)
        skipped += outside
        new_files += [path for path in files if str(path.resolve()) not in known_paths]
    new_texts = []
    if texts is not None:
        known_texts = {item["text"] for item in index.items if item["type"] == "text"}
        lines = Path(texts).read_text(encoding="utf-8").splitlines()
        new_texts = list(
            dict.fromkeys(line.strip() for line in lines if line.strip() and line.strip() not in known_texts)
        )

    if index.vectors is None:
        index.kind = resolve_kind(kind, len(new_files) + len(new_texts))
    added = 0
    with tqdm(total=len(new_files) + len(new_texts), desc="embedding", unit="item", disable=not progress) as bar:
        for start in range(0, len(new_files), batch_size):
            chunk = new_files[start : start + batch_size]
            pil_images, kept = _read_images(chunk, skipped)
            if kept:
                vectors = model.encode_image(pil_images, batch_size=batch_size, truncate_dim=truncate_dim)
                index.add([{"type": "image", "path": str(path.resolve())} for path in kept], vectors)
                added += len(kept)
            bar.update(len(chunk))
        for start in range(0, len(new_texts), batch_size):
            chunk = new_texts[start : start + batch_size]
            vectors = model.encode_text(chunk, batch_size=batch_size, truncate_dim=truncate_dim)
            index.add([{"type": "text", "text": text} for text in chunk], vectors)
            added += len(chunk)
            bar.update(len(chunk))
    if index.vectors is None:
        raise SearchError("nothing to index: no readable images or texts were given")
    index.skipped = skipped
    index.save(output)
    for entry in skipped:
        logger.warning("skipped %s (%s)", entry["path"], entry["reason"])
    return {"added": added, "skipped": skipped, "total": len(index.items), "kind": index.kind, "dim": index.dim}


def search(index: SearchIndex, model, *, text: str | None = None, image=None, k: int = 10) -> list[dict]:
    """The ``k`` nearest items to a text (any language) or an image (PIL or path)."""
    if (text is None) == (image is None):
        raise SearchError("give either a text query or an image, not both or neither")
    if text is not None:
        text = text.strip()
        if not text:
            raise SearchError("empty query")
        if len(text) > MAX_QUERY_CHARS:
            raise SearchError(f"query too long: {len(text)} characters, at most {MAX_QUERY_CHARS}")
    if image is not None and "image" not in model.modalities:
        raise SearchError(f"a {'/'.join(model.modalities)} model: it cannot embed an image query")
    truncate_dim = None if index.dim == model.embed_dim else index.dim
    if text is not None:
        vector = model.encode_text(text, truncate_dim=truncate_dim)
    else:
        vector = model.encode_image(str(image) if isinstance(image, Path) else image, truncate_dim=truncate_dim)
    return index.search(np.asarray(vector), k)


def query(
    index_dir: str | Path,
    *,
    text: str | None = None,
    image=None,
    k: int = 10,
    truncate_dim: int | None = None,
    model_dir: str | Path | None = None,
) -> list[dict]:
    index = SearchIndex.load(index_dir)
    model_dir = Path(model_dir or index.model)
    index.check_model(model_dir, truncate_dim)
    return search(index, load_model(model_dir), text=text, image=image, k=k)
