"""Peak memory per GPU of a stage config: ``mmclip info STAGE.yaml --memory``.

An analytic estimate of what PyTorch allocates (the CUDA context, ~0.5 GB, and allocator
fragmentation come on top), in four parts, for P parameters over N ranks:

* **model states** (the ZeRO paper's accounting): bf16 weights 2P and gradients 2P, fp32 master
  weights and Adam moments 12P; ZeRO-1 shards the 12P over N, ZeRO-2 also the gradients, ZeRO-3
  also the weights. Under fp32: 4P + 4P + 8P.
* **activations** of what is alive at once: the whole per-rank batch of every stream without
  GradCache (all forwards precede the one backward), one chunk of one stream with it (chunks run
  one at a time). Per token and layer a tower keeps ``a`` bytes (bf16; twice under fp32), counted
  from what its backward needs with SDPA / flash attention (no ``s x s`` matrix):
  EVA02 ``2 (11h + 5m)`` (pre-LN, the fused qkv output that v views plus q and k after RoPE,
  sub-LN, SwiGLU hidden m with its LayerNorm), XLM-R ``2 (10h + 2i) + 2h`` (the same attention,
  post-LN, GELU hidden i, two dropout masks of a byte); tests/test_memory.py checks both against
  the tensors autograd actually saves. With
  activation checkpointing a layer keeps only its input, ``2h`` bytes per token, and one layer at
  a time is recomputed in full. Tokens: ``1 + patches x (1 - patch_dropout)`` per image, the
  context length per text (the padded worst case), ``2 + k`` texts per triplet.
* **loss**: per Matryoshka dim and direction the fp32 logits ``b x C`` are kept twice (the
  product, for the temperature's gradient, and the log-softmax), plus two transient ones of the
  largest size; C is the global candidate count (``N b (1 + k)`` from queries to positives and
  negatives, ``N b`` back). Streams count together without GradCache, one at a time with it.
* **embeddings**: every rank holds the all-gathered fp32 embeddings and, per Matryoshka dim, their
  normalised prefixes with gradients (GradCache also caches its own batch's, which is smaller).

The estimate is per resolution of the stage's schedule; the peak is the largest.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from ..models import CLIPConfig, TextConfig, VisionConfig
from .config import TrainConfig

GB = 1e9


def vision_bytes_per_token_layer(config: VisionConfig) -> int:
    return 2 * (11 * config.width + 5 * config.mlp_hidden_dim)


def text_bytes_per_token_layer(config: TextConfig) -> int:
    return 2 * (10 * config.hidden_size + 2 * config.intermediate_size) + 2 * config.hidden_size


def vision_tokens(config: VisionConfig, image_size: int, patch_dropout: float) -> int:
    patches = (image_size // config.patch_size) ** 2
    return 1 + (max(1, int(patches * (1 - patch_dropout))) if patch_dropout else patches)


@dataclass(frozen=True)
class Tower:
    """One tower's activation cost for ``sequences`` inputs of ``tokens`` tokens."""

    layers: int
    width: int
    bytes_per_token_layer: int
    tokens: int
    sequences: int

    def stored(self, checkpointing: bool, scale: int) -> float:
        per_layer = 2 * self.width if checkpointing else self.bytes_per_token_layer
        return scale * per_layer * self.layers * self.tokens * self.sequences

    def recomputed_layer(self, scale: int) -> float:
        return scale * self.bytes_per_token_layer * self.tokens * self.sequences


def _stream_towers(kind: str, samples: int, model: CLIPConfig, image_tokens: int, context: int, negatives: int) -> list[Tower]:
    text = Tower(model.text.depth, model.text.hidden_size, text_bytes_per_token_layer(model.text), context, samples)
    if kind == "image_text":
        vision = Tower(model.vision.depth, model.vision.width, vision_bytes_per_token_layer(model.vision), image_tokens,
                       samples)
        return [vision, text]
    texts = 2 + (negatives if kind == "text_triplet" else 0)
    return [Tower(text.layers, text.width, text.bytes_per_token_layer, context, samples * texts)]


def _activations(towers: list[Tower], checkpointing: bool, scale: int) -> float:
    stored = sum(t.stored(checkpointing, scale) for t in towers)
    return stored + (max(t.recomputed_layer(scale) for t in towers) if checkpointing else 0.0)


def parameter_count(model: CLIPConfig, image_size: int) -> int:
    from ..factory import create_model

    model = copy.deepcopy(model)
    model.vision.image_size = image_size
    return sum(p.numel() for p in create_model(model, device="meta").parameters())


def model_state_bytes(params: int, world_size: int, zero_stage: int, bf16: bool) -> dict[str, float]:
    weights, grads, optimizer = (2, 2, 12) if bf16 else (4, 4, 8)
    shard = lambda bytes_per_param, stage: params * bytes_per_param / (world_size if zero_stage >= stage else 1)  # noqa: E731
    return {"weights": shard(weights, 3), "gradients": shard(grads, 2), "optimizer": shard(optimizer, 1)}


def estimate_memory(config: TrainConfig, model: CLIPConfig, world_size: int) -> dict:
    """Peak bytes per GPU by part, for each image size of the stage (see the module docstring)."""
    bf16 = config.precision == "bf16"
    scale = 1 if bf16 else 2
    patch_dropout = model.vision.patch_dropout if config.clip.patch_dropout is None else config.clip.patch_dropout
    dims = config.loss.matryoshka_dims or model.matryoshka_dims
    sizes = sorted({config.data.image_size, *(p.image_size for p in config.clip.resolution_schedule)})
    phases = []
    for image_size in sizes:
        params = parameter_count(model, image_size)
        states = model_state_bytes(params, world_size, config.zero_stage, bf16)
        tokens = vision_tokens(model.vision, image_size, patch_dropout)
        activations, losses, embeddings = [], [], 0.0
        for name, stream in config.data.streams.items():
            per_rank = stream.batch_size // world_size
            chunk = config.grad_cache_chunk.get(name, per_rank)
            negatives = stream.num_negatives if stream.kind == "text_triplet" else 0
            towers = _stream_towers(stream.kind, chunk, model, tokens, config.data.context(name), negatives)
            activations.append(_activations(towers, config.gradient_checkpointing, scale))
            to_candidates = world_size * per_rank * (1 + negatives)
            losses.append(4 * per_rank * (2 * len(dims) * (to_candidates + world_size * per_rank) + 2 * to_candidates))
            embeds_per_sample = 2 + negatives
            embeddings += world_size * per_rank * embeds_per_sample * 4 * (model.embed_dim + 2 * sum(dims))
        chunked = bool(config.grad_cache_chunk)
        parts = {
            **states,
            "activations": max(activations) if chunked else sum(activations),
            "loss": max(losses) if chunked else sum(losses),
            "embeddings": embeddings,
        }
        phases.append({
            "image_size": image_size,
            "vision_tokens": tokens,
            "parameters": params,
            "gb": {key: value / GB for key, value in parts.items()},
            "total_gb": sum(parts.values()) / GB,
        })
    return {
        "world_size": world_size,
        "precision": config.precision,
        "zero_stage": config.zero_stage,
        "gradient_checkpointing": config.gradient_checkpointing,
        "grad_cache_chunk": dict(config.grad_cache_chunk),
        "per_rank_batch": {name: s.batch_size // world_size for name, s in config.data.streams.items()},
        "phases": phases,
        "peak_gb": max(p["total_gb"] for p in phases),
    }


def format_memory(estimate: dict, title: str, device_gb: float) -> str:
    lines = [
        f"stage: {title}",
        f"  {estimate['world_size']} ranks, {estimate['precision']}, ZeRO-{estimate['zero_stage']}, activation "
        f"checkpointing {'on' if estimate['gradient_checkpointing'] else 'off'}",
        f"  per-rank batch {estimate['per_rank_batch']}, GradCache chunks {estimate['grad_cache_chunk'] or 'none'}",
        "  estimated peak GB per GPU (PyTorch allocations; CUDA context and fragmentation extra):",
    ]
    keys = ("weights", "gradients", "optimizer", "activations", "loss", "embeddings")
    lines.append(f"    {'px':>5}{'tokens':>8}" + "".join(f"{k:>12}" for k in keys) + f"{'total':>9}")
    for phase in estimate["phases"]:
        lines.append(f"    {phase['image_size']:>5}{phase['vision_tokens']:>8}"
                     + "".join(f"{phase['gb'][k]:>12.1f}" for k in keys) + f"{phase['total_gb']:>9.1f}")
    verdict = "fits" if estimate["peak_gb"] <= device_gb else "does NOT fit"
    lines.append(f"  peak {estimate['peak_gb']:.1f} GB: {verdict} in {device_gb:g} GB")
    return "\n".join(lines)
