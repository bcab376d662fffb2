"""Retrieval on held-out shard sets while a stage trains (``validation:`` in the stage YAML).

Every set is read once, whole, with the eval image transform (resize, center crop) at the
stage's current resolution, and embedded at full width by the model being trained:

* ``image_text``: image -> caption and caption -> image, ``i2t_recall@k`` / ``t2i_recall@k``;
* ``text_pair`` / ``text_triplet``: query -> positive among every positive of the set (and the
  triplets' hard negatives), ``recall@k`` and ``ndcg@k``.

Each query has one relevant item, so both metrics follow from the rank of that item among the
candidates: recall@k = [rank < k], nDCG@k = [rank < k] / log2(rank + 2) (the ideal DCG is 1).
The full benchmarks (clip_benchmark, mteb) are ``mmclip eval``'s; this is the training-time
signal, cheap enough to run every few hundred steps. Every rank embeds every set (a ZeRO-3
forward needs all ranks); rank 0 logs.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F

from ..data.config import DataConfig
from ..data.loader import StreamDataset
from .config import ValidationConfig
from .step import embed_stream, to_device


def positive_ranks(scores: torch.Tensor) -> torch.Tensor:
    """``[Q]`` rank (0 = first) of column ``i`` in row ``i`` of ``scores [Q, N >= Q]``; ties rank it first."""
    positive = scores.diagonal()
    return (scores > positive[:, None]).sum(dim=1)


def ranking_metrics(ranks: torch.Tensor, recall_k: list[int], ndcg_k: int | None, prefix: str = "") -> dict[str, float]:
    metrics = {f"{prefix}recall@{k}": (ranks < k).double().mean().item() for k in recall_k}
    if ndcg_k is not None:
        gain = torch.where(ranks < ndcg_k, 1.0 / torch.log2(ranks.double() + 2), torch.zeros((), dtype=torch.double))
        metrics[f"{prefix}ndcg@{ndcg_k}"] = gain.mean().item()
    return metrics


class Validator:
    """The ``validation:`` sets of a stage, embedded by :meth:`run` (``{set: {metric: value}}``)."""

    def __init__(self, config: ValidationConfig, data: DataConfig, tokenizer):
        self.config, self.tokenizer = config, tokenizer
        # One single-stream, single-worker, unshuffled pass per set, with the stage's text lengths.
        self.data = DataConfig(
            streams=copy.deepcopy(config.sets), image_size=data.image_size, context_length=data.context_length,
            num_workers=0, interleave=1, shuffle_block=1, max_image_pixels=data.max_image_pixels,
            reduced_decode=data.reduced_decode,
        )

    def due(self, step: int, total: int) -> bool:
        return step % self.config.every_steps == 0 or step == total

    @torch.no_grad()
    def run(self, model: torch.nn.Module, image_size: int, dtype: torch.dtype, device: torch.device) -> dict[str, Any]:
        data = copy.copy(self.data)
        data.image_size = image_size
        was_training = model.training
        model.eval()  # no dropout, no patch dropout
        try:
            return {name: self._set_metrics(model, data, name, dtype, device) for name in data.streams}
        finally:
            model.train(was_training)

    def _set_metrics(self, model, data: DataConfig, name: str, dtype, device) -> dict[str, float]:
        kind = data.streams[name].kind
        dataset = StreamDataset(data, name, self.tokenizer, epochs=1, augment=False)
        parts: dict[str, list[torch.Tensor]] = {}
        for batch in dataset.batches(0):
            batch.pop("_progress")
            for key, value in embed_stream(model, kind, to_device(batch, device), dtype).items():
                parts.setdefault(key, []).append(F.normalize(value.float(), dim=-1))
        embeds = {key: torch.cat(values) for key, values in parts.items()}
        config = self.config
        if kind == "image_text":  # query: the image, positive: its caption
            images, captions = embeds["query"], embeds["positive"]
            return {
                **ranking_metrics(positive_ranks(images @ captions.T), config.recall_k, None, "i2t_"),
                **ranking_metrics(positive_ranks(captions @ images.T), config.recall_k, None, "t2i_"),
            }
        candidates = embeds["positive"]
        if "negatives" in embeds:  # the positives first, so query i's positive stays column i
            candidates = torch.cat([candidates, embeds["negatives"].flatten(0, 1)])
        return ranking_metrics(positive_ranks(embeds["query"] @ candidates.T), config.recall_k, config.ndcg_k)
