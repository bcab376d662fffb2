"""One training step's embeddings and losses, whole or by GradCache chunks (Gao et al., 2021).

The contrastive loss couples every sample of the global batch, so a batch larger than activation
memory cannot be split into independent micro-batches. GradCache splits the model's work instead:

1. embed the per-rank batch chunk by chunk **without** gradients, recording the RNG state before
   each chunk;
2. compute the loss of the whole batch from those embeddings (all-gathered across ranks as usual)
   and backpropagate it to the embeddings and the temperatures only;
3. embed each chunk again **with** gradients, replaying its RNG state so dropout and patch dropout
   draw the same masks, and backpropagate the cached embedding gradients through it: the
   surrogate ``sum(embeddings * cached_gradients)`` has exactly those gradients.

Parameter gradients equal the unchunked step's; activation memory is one chunk's plus the
embeddings of the batch, for one extra forward pass. Chunks accumulate into the same gradients,
so the caller's ``backward(surrogate, last)`` reduces across ranks only on the last one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ..data import normalize
from ..losses import InfoNCELoss
from ..models import MMCLIP

Embeddings = dict[str, torch.Tensor]  # "query", "positive" [B, D]; "negatives" [B, k, D] for triplets
Backward = Callable[[torch.Tensor, bool], None]  # (surrogate loss, is the step's last backward)


def logit_scale_name(kind: str) -> str:
    """The temperature of a stream kind: one for image-text, one for every text-text task."""
    return "logit_scale_image_text" if kind == "image_text" else "logit_scale_text_text"


def embed_stream(forward: Callable[..., Any], kind: str, batch: dict[str, Any], dtype: torch.dtype) -> Embeddings:
    """Full-width embeddings of one stream's batch: images and captions, or queries, positives, negatives."""
    if kind == "image_text":
        out = forward(pixel_values=normalize(batch["pixel_values"], dtype), input_ids=batch["input_ids"],
                      attention_mask=batch["attention_mask"])
        return {"query": out.image_embeds, "positive": out.text_embeds}
    embeds = {
        "query": forward(input_ids=batch["query_ids"], attention_mask=batch["query_mask"]).text_embeds,
        "positive": forward(input_ids=batch["positive_ids"], attention_mask=batch["positive_mask"]).text_embeds,
    }
    if "negative_ids" in batch:
        ids, mask = batch["negative_ids"], batch["negative_mask"]
        flat = forward(input_ids=ids.flatten(0, 1), attention_mask=mask.flatten(0, 1)).text_embeds
        embeds["negatives"] = flat.view(*ids.shape[:2], -1)
    return embeds


def stream_loss(loss_fn: InfoNCELoss, embeds: Embeddings, logit_scale: torch.Tensor) -> dict[str, torch.Tensor]:
    """InfoNCE (with Matryoshka and hard negatives) of one stream's embeddings, in float32."""
    negatives = embeds.get("negatives")
    return loss_fn(embeds["query"].float(), embeds["positive"].float(), logit_scale,
                   None if negatives is None else negatives.float())


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def split_batch(batch: dict[str, Any], size: int) -> list[dict[str, Any]]:
    """Consecutive chunks of ``size`` samples (tensors and the key list sliced alike)."""
    count = len(batch["keys"])
    return [{k: v[start:start + size] for k, v in batch.items()} for start in range(0, count, size)]


class RandomState:
    """The CPU (and this device's CUDA) generator state at one moment, to replay a chunk's draws."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    @contextmanager
    def replay(self) -> Iterator[None]:
        """Run the block from this state; the generators continue afterwards as if it had not run."""
        with torch.random.fork_rng(devices=[self.device] if self.cuda is not None else []):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            yield


def whole_step(
    forward: Callable[..., Any],
    model: MMCLIP,
    batches: dict[str, dict[str, Any]],
    kinds: dict[str, str],
    loss_fn: InfoNCELoss,
    weights: dict[str, float],
    dtype: torch.dtype,
    device: torch.device,
    backward: Backward,
) -> tuple[torch.Tensor, dict[str, dict[str, torch.Tensor]]]:
    """Every stream embedded in one piece with gradients, one backward. Returns the total and stream losses."""
    losses = {}
    for name, batch in batches.items():
        embeds = embed_stream(forward, kinds[name], to_device(batch, device), dtype)
        losses[name] = stream_loss(loss_fn, embeds, getattr(model, logit_scale_name(kinds[name])))
    total = sum(weights.get(name, 1.0) * out["loss"] for name, out in losses.items())
    backward(total, True)
    return total.detach(), {name: {k: v.detach() for k, v in out.items()} for name, out in losses.items()}


def grad_cache_step(
    forward: Callable[..., Any],
    model: MMCLIP,
    batches: dict[str, dict[str, Any]],
    kinds: dict[str, str],
    chunk_sizes: dict[str, int],
    loss_fn: InfoNCELoss,
    weights: dict[str, float],
    dtype: torch.dtype,
    device: torch.device,
    backward: Backward,
) -> tuple[torch.Tensor, dict[str, dict[str, torch.Tensor]]]:
    """:func:`whole_step`'s losses and gradients, embedding ``chunk_sizes[stream]`` samples at a time.

    A stream missing from ``chunk_sizes`` is one chunk. ``forward`` is the model (or its engine).
    """
    # 1. Embeddings without gradients, and the RNG state each chunk started from.
    chunks: list[tuple[str, dict[str, Any], RandomState]] = []
    cached: dict[str, Embeddings] = {}
    for name, batch in batches.items():
        parts = []
        for chunk in split_batch(batch, chunk_sizes.get(name, len(batch["keys"]))):
            chunks.append((name, chunk, RandomState(device)))
            with torch.no_grad():
                parts.append(embed_stream(forward, kinds[name], to_device(chunk, device), dtype))
        cached[name] = {key: torch.cat([p[key] for p in parts]).float().requires_grad_() for key in parts[0]}

    # 2. The loss of the whole batch, differentiated w.r.t. the embeddings and detached temperature
    # copies only: the model's parameters get their gradients from step 3, through ``backward``.
    names = {logit_scale_name(kinds[name]) for name in batches}
    scales = {attr: getattr(model, attr).detach().requires_grad_() for attr in sorted(names)}
    # Stream by stream: only one stream's logits are alive at a time (the gradients add up).
    losses = {}
    for name in batches:
        losses[name] = stream_loss(loss_fn, cached[name], scales[logit_scale_name(kinds[name])])
        (weights.get(name, 1.0) * losses[name]["loss"]).backward()
    total = sum(weights.get(name, 1.0) * out["loss"] for name, out in losses.items())

    # 3. Each chunk again with gradients, against its slice of the cached embedding gradients.
    offsets = dict.fromkeys(batches, 0)
    for index, (name, chunk, state) in enumerate(chunks):
        with state.replay():
            embeds = embed_stream(forward, kinds[name], to_device(chunk, device), dtype)
        start, size = offsets[name], len(chunk["keys"])
        offsets[name] += size
        surrogate = sum((embeds[key].float() * cached[name][key].grad[start:start + size]).sum() for key in embeds)
        if index == 0:  # the temperatures' gradients join the first backward
            for attr, scale in scales.items():
                if scale.grad is not None:
                    surrogate = surrogate + (getattr(model, attr) * scale.grad).sum()
        backward(surrogate, index == len(chunks) - 1)
    return total.detach(), {name: {k: v.detach() for k, v in out.items()} for name, out in losses.items()}
