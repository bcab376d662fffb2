"""A search index: embeddings of images (and texts) in a faiss index, with paths and metadata.

Layout of ``INDEX/``::

    vectors.faiss   faiss index over L2-normalised embeddings (inner product = cosine)
    meta.json       model (path + fingerprint), dim, index kind, roots, items, skipped files

Exact search (``IndexFlatIP``) up to ``EXACT_LIMIT`` items, HNSW above it (or by ``kind``); IVF
on request for very large collections. Adding to an existing index embeds only files it does not
hold yet. Everything is written into ``INDEX.tmp`` and renamed, so an index is never half-written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import integrity

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
KINDS = ("auto", "flat", "hnsw", "ivf")
# Exact search costs ~50 ms a query at 50k x 1024 on 2 cores and grows linearly (150 ms at 200k); HNSW
# stays under 1 ms at recall@10 0.97-0.998 but takes ~0.5 ms per item to build (bench/search_index.py).
EXACT_LIMIT = 50_000
HNSW_NEIGHBOURS = 32
MAX_K = 1000
FORMAT_VERSION = 1


class SearchError(ValueError):
    """A bad query or an index that does not fit the model or settings it is used with."""


def model_fingerprint(model_dir: str | Path) -> str:
    """Identifies an exported model: its config and the size of its weights (hashing GBs would be slow)."""
    model_dir = Path(model_dir)
    digest = hashlib.sha256((model_dir / "config.json").read_bytes())
    digest.update(str((model_dir / "model.safetensors").stat().st_size).encode())
    return digest.hexdigest()[:16]


@dataclass
class SearchIndex:
    model: str
    fingerprint: str
    dim: int
    kind: str = "flat"
    roots: list[str] = field(default_factory=list)
    items: list[dict] = field(default_factory=list)  # {"type": "image", "path": ...} or {"type": "text", "text": ...}
    skipped: list[dict] = field(default_factory=list)
    vectors: object = None  # the faiss index

    # --- reading and writing --------------------------------------------------------------------

    @classmethod
    def load(cls, directory: str | Path) -> SearchIndex:
        import faiss

        directory = Path(directory)
        meta_file = directory / "meta.json"
        if not meta_file.is_file():
            raise SearchError(f"{directory}: not a search index (no meta.json)")
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION:
            raise SearchError(f"{meta_file}: format_version {meta.get('format_version')}, expected {FORMAT_VERSION}")
        index = cls(**{key: meta[key] for key in ("model", "fingerprint", "dim", "kind", "roots", "items", "skipped")})
        index.vectors = faiss.read_index(str(directory / "vectors.faiss"))
        if index.vectors.ntotal != len(index.items) or index.vectors.d != index.dim:
            raise SearchError(
                f"{directory}: vectors.faiss holds {index.vectors.ntotal}x{index.vectors.d}, meta.json "
                f"{len(index.items)} items of dim {index.dim}"
            )
        return index

    def save(self, directory: str | Path) -> None:
        import faiss

        directory = Path(directory)
        tmp = directory.with_name(directory.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        faiss.write_index(self.vectors, str(tmp / "vectors.faiss"))
        meta = {
            "format_version": FORMAT_VERSION,
            **{key: getattr(self, key) for key in ("model", "fingerprint", "dim", "kind", "roots", "items", "skipped")},
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        integrity.replace_directory(tmp, directory)

    # --- vectors --------------------------------------------------------------------------------

    def add(self, items: list[dict], embeddings: np.ndarray) -> None:
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if self.vectors is None:
            self.vectors = new_faiss_index(self.dim, self.kind, embeddings)
        self.vectors.add(embeddings)
        self.items.extend(items)

    def check_model(self, model_dir: str | Path, dim: int | None) -> None:
        """Refuse a model or dimension other than the index was built with."""
        fingerprint = model_fingerprint(model_dir)
        if fingerprint != self.fingerprint:
            raise SearchError(
                f"the index was built with model {self.model} (fingerprint {self.fingerprint}); "
                f"{model_dir} is another model (fingerprint {fingerprint}): re-index with it or query with that model"
            )
        if dim is not None and dim != self.dim:
            raise SearchError(f"the index holds {self.dim}-d embeddings; --truncate-dim {dim} does not match")

    def search(self, query: np.ndarray, k: int) -> list[dict]:
        if not 1 <= k <= MAX_K:
            raise SearchError(f"k must be between 1 and {MAX_K}, got {k}")
        if not self.items:
            return []
        scores, ids = self.vectors.search(np.ascontiguousarray(query[None], dtype=np.float32), min(k, len(self.items)))
        return [
            {"rank": rank + 1, "score": float(score), "id": int(i), **self.items[i]}
            for rank, (score, i) in enumerate(zip(scores[0], ids[0]))
            if i >= 0
        ]


def new_faiss_index(dim: int, kind: str, first_batch: np.ndarray):
    """``flat``: exact; ``hnsw``: graph, no training; ``ivf``: trained on the first batch (sqrt(n) lists)."""
    import faiss

    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 128
        return index
    if kind == "ivf":
        lists = max(1, int(np.sqrt(len(first_batch))))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
        index.train(first_batch)
        index.nprobe = min(lists, max(8, lists // 8))  # >= 8 lists probed: recall near exact
        return index
    raise SearchError(f"index kind must be one of {KINDS}, got {kind!r}")


def resolve_kind(kind: str, count: int) -> str:
    if kind not in KINDS:
        raise SearchError(f"index kind must be one of {KINDS}, got {kind!r}")
    if kind != "auto":
        return kind
    return "flat" if count <= EXACT_LIMIT else "hnsw"
