"""One contrastive training step's embeddings and losses, whole or by GradCache chunks (Gao et al., 2021).

Pixels arrive as the loader made them, ``uint8``; they are normalised here, on the device, and
nowhere else in training.

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

Image embeddings that take no gradient (a frozen vision tower and projection, as ``mmclip
finetune`` trains jina-clip-v2) are final after step 1: step 3 embeds only the captions then,
and the vision tower, most of the step's compute, runs once instead of twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from ..data.transforms import normalize
from ..losses import InfoNCELoss

Embeddings = dict[str, torch.Tensor]  # "query", "positive" [B, D]; "negatives" [B, k, D] for triplets
Backward = Callable[[torch.Tensor, bool], None]  # (surrogate loss, is the step's last backward)
StepLosses = tuple[torch.Tensor, dict[str, dict[str, torch.Tensor]]]  # total, per stream {"loss", "loss@d"}
LogitScale = Callable[[str], torch.Tensor]  # stream kind -> log(1 / temperature), from the model family


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


@dataclass
class ContrastiveStep:
    """What one step needs besides its batches: ``forward`` is the model or its engine,
    ``logit_scale(kind)`` the family's temperature of a stream kind, ``kinds`` the stream kinds,
    ``weights`` the stream-loss weights (default 1), ``backward(loss, last)`` the engine's backward,
    ``fixed_images`` whether image embeddings take no gradient (nothing of the vision side trains).
    Both step flavours return the detached total and stream losses."""

    forward: Callable[..., Any]
    logit_scale: LogitScale
    kinds: dict[str, str]
    loss_fn: InfoNCELoss
    weights: dict[str, float]
    dtype: torch.dtype
    device: torch.device
    backward: Backward
    fixed_images: bool = False

    def embed(self, name: str, batch: dict[str, Any]) -> Embeddings:
        return embed_stream(self.forward, self.kinds[name], to_device(batch, self.device), self.dtype)

    def captions_only(self, name: str) -> bool:
        """GradCache's step 3 embeds only this stream's captions: its images' embeddings are final."""
        return self.fixed_images and self.kinds[name] == "image_text"

    def embed_images(self, batch: dict[str, Any]) -> torch.Tensor:
        pixels = batch["pixel_values"].to(self.device, non_blocking=True)
        return self.forward(pixel_values=normalize(pixels, self.dtype)).image_embeds

    def embed_captions(self, batch: dict[str, Any]) -> torch.Tensor:
        ids, mask = (batch[key].to(self.device, non_blocking=True) for key in ("input_ids", "attention_mask"))
        return self.forward(input_ids=ids, attention_mask=mask).text_embeds

    def weighted_total(self, losses: dict[str, dict[str, torch.Tensor]]) -> torch.Tensor:
        return sum(self.weights.get(name, 1.0) * out["loss"] for name, out in losses.items())

    def whole(self, batches: dict[str, dict[str, Any]]) -> StepLosses:
        """Every stream embedded in one piece with gradients, one backward."""
        losses = {}
        for name, batch in batches.items():
            losses[name] = stream_loss(self.loss_fn, self.embed(name, batch), self.logit_scale(self.kinds[name]))
        total = self.weighted_total(losses)
        self.backward(total, True)
        return total.detach(), _detached(losses)

    def grad_cache(self, batches: dict[str, dict[str, Any]], chunk_sizes: dict[str, int]) -> StepLosses:
        """:meth:`whole`'s losses and gradients, embedding ``chunk_sizes[stream]`` samples at a time.

        A stream missing from ``chunk_sizes`` is one chunk.
        """
        # 1. Embeddings without gradients, and the RNG state each chunk started from.
        chunks: list[tuple[str, dict[str, Any], RandomState]] = []
        cached: dict[str, Embeddings] = {}
        for name, batch in batches.items():
            parts = []
            for chunk in split_batch(batch, chunk_sizes.get(name, len(batch["keys"]))):
                with torch.no_grad():
                    # Final images are embedded before the chunk's RNG state, as the joint forward orders them.
                    images = self.embed_images(chunk) if self.captions_only(name) else None
                    chunks.append((name, chunk, RandomState(self.device)))
                    parts.append(self.embed(name, chunk) if images is None
                                 else {"query": images, "positive": self.embed_captions(chunk)})
            cached[name] = {key: torch.cat([p[key] for p in parts]).float().requires_grad_() for key in parts[0]}

        # 2. The loss of the whole batch, differentiated w.r.t. the embeddings and detached temperature
        # copies only (one per stream kind): the model's parameters get their gradients from step 3,
        # through ``backward``.
        kinds = sorted({self.kinds[name] for name in batches})
        scales = {kind: self.logit_scale(kind).detach().requires_grad_() for kind in kinds}
        # Stream by stream: only one stream's logits are alive at a time (the gradients add up).
        losses = {}
        for name in batches:
            losses[name] = stream_loss(self.loss_fn, cached[name], scales[self.kinds[name]])
            (self.weights.get(name, 1.0) * losses[name]["loss"]).backward()

        # 3. Each chunk again with gradients, against its slice of the cached embedding gradients.
        offsets = dict.fromkeys(batches, 0)
        for index, (name, chunk, state) in enumerate(chunks):
            with state.replay():
                embeds = {"positive": self.embed_captions(chunk)} if self.captions_only(name) else self.embed(name, chunk)
            start, size = offsets[name], len(chunk["keys"])
            offsets[name] += size
            surrogate = sum((embeds[key].float() * cached[name][key].grad[start:start + size]).sum() for key in embeds)
            if index == 0:  # the temperatures' gradients join the first backward (a fixed one has none)
                for kind, scale in scales.items():
                    live = self.logit_scale(kind)
                    if scale.grad is not None and live.requires_grad:
                        surrogate = surrogate + (live * scale.grad).sum()
            self.backward(surrogate, index == len(chunks) - 1)
        return self.weighted_total(losses).detach(), _detached(losses)


def _detached(losses: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict[str, torch.Tensor]]:
    return {name: {k: v.detach() for k, v in out.items()} for name, out in losses.items()}
