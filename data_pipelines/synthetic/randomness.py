"""Deterministic randomness: one independent generator per (seed, stream, sample index).

A sample depends only on its triple, never on which worker made it or in which order, so any
``--workers`` gives the same corpus. Held-out sets use their own streams, disjoint from training.
"""

from __future__ import annotations

import numpy as np

STREAMS = {
    "image_text_short": 1,
    "image_text_long": 2,
    "text_pair": 3,
    "text_triplet": 4,
    "text": 5,  # plain texts (LUSIFER's reconstruction set, text_corpus.py)
    "eval_images": 101,
    "eval_documents": 102,
    "eval_sts": 103,
    "eval_text_retrieval": 104,
}


def rng_for(seed: int, stream: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, STREAMS[stream], index])


def pick(rng: np.random.Generator, values):
    """One element of a sequence, as the element itself (``rng.choice`` would give numpy scalars)."""
    return values[rng.integers(len(values))]
