"""Contrastive losses of jina-clip-v2 (section 3.3): InfoNCE, InfoNCE with hard negatives, Matryoshka.

``InfoNCELoss`` computes, for queries ``q`` and positives ``p`` (and optionally ``k`` hard negatives
``n`` per query), with ``s = exp(logit_scale) = 1 / tau`` and cosine similarities::

    L(q->p) = mean_i -log  exp(s cos(q_i, p_i)) / (sum_j exp(s cos(q_i, p_j)) + sum_j,k exp(s cos(q_i, n_jk)))
    L(p->q) = mean_i -log  exp(s cos(p_i, q_i)) /  sum_j exp(s cos(p_i, q_j))
    L_nce   = L(q->p) + L(p->q)                                    (equations 1 and 2, summed)

and again on the first ``d`` dimensions of every embedding (re-normalised) for each Matryoshka
``d``, summing ``weight_d * L_nce``. Across ranks, embeddings are all-gathered with gradients and
each rank takes only its own rows against all columns (open_clip's ``local_loss``), so memory
grows linearly with the global batch. The per-rank loss is the mean over local rows; the data
parallel engine's gradient averaging then makes the update equal the single-process one.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F
from torch import nn


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All ranks' ``x`` concatenated on dim 0, differentiable (identity without a process group)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return torch.cat(dist_fn.all_gather(x), dim=0)


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class InfoNCELoss(nn.Module):
    """Bidirectional InfoNCE over the global batch, at every Matryoshka dimension.

    ``dims`` must end with the full embedding width, so the full-dimension loss is never dropped
    (a bug of Jina's training fork); ``weights`` default to 1 for every dimension.
    """

    def __init__(self, dims: list[int], weights: list[float] | None = None):
        super().__init__()
        if not dims or list(dims) != sorted(set(dims)):
            raise ValueError(f"Matryoshka dims must be increasing and unique, got {dims}")
        weights = [1.0] * len(dims) if weights is None else list(weights)
        if len(weights) != len(dims):
            raise ValueError(f"{len(weights)} Matryoshka weights for {len(dims)} dims")
        self.dims, self.weights = list(dims), weights

    def forward(
        self,
        query: torch.Tensor,
        positive: torch.Tensor,
        logit_scale: torch.Tensor,
        negatives: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``query``, ``positive`` ``[B, D]``; ``negatives`` ``[B, k, D]``. Returns ``loss`` and ``loss@d`` per dim.

        Every rank must pass the same local batch size.
        """
        width = query.shape[-1]
        if self.dims[-1] != width:
            raise ValueError(f"the last Matryoshka dim must be the embedding width {width}, got {self.dims[-1]}")
        local = {"query": query, "positive": positive}
        if negatives is not None:
            local["negatives"] = negatives.flatten(0, 1)
        gathered = {name: gather_with_grad(x) for name, x in local.items()}
        labels = torch.arange(query.shape[0], device=query.device) + _rank() * query.shape[0]
        scale = logit_scale.exp()

        losses, total = {}, query.new_zeros(())
        for dim, weight in zip(self.dims, self.weights):
            q, p = (F.normalize(local[name][:, :dim], dim=-1) for name in ("query", "positive"))
            all_q, all_p = (F.normalize(gathered[name][:, :dim], dim=-1) for name in ("query", "positive"))
            candidates = all_p
            if negatives is not None:
                candidates = torch.cat((all_p, F.normalize(gathered["negatives"][:, :dim], dim=-1)))
            loss = F.cross_entropy(scale * q @ candidates.T, labels) + F.cross_entropy(scale * p @ all_q.T, labels)
            losses[f"loss@{dim}"] = loss.detach()
            total = total + weight * loss
        losses["loss"] = total
        return losses
