"""Peak memory per GPU of a stage config: ``mmclip info STAGE.yaml --memory``.

An analytic estimate of what PyTorch allocates (the CUDA context, ~0.5 GB, and allocator
fragmentation come on top), in four parts, for P parameters over N ranks:

* **model states** (the ZeRO paper's accounting): bf16 weights 2P and gradients 2T, fp32 master
  weights and Adam moments 12T, where T <= P are the trainable parameters (``towers:``, see
  :mod:`.trainable`: frozen weights have neither gradients nor optimizer state; LoRA adapters
  count in both P and T); ZeRO-1 shards the 12T over N, ZeRO-2 also the gradients, ZeRO-3 also
  the weights. Under fp32: 4P + 4T + 8T.
* **activations** of what is alive at once: the whole per-rank batch of every stream without
  GradCache (all forwards precede the one backward), one chunk of one stream with it (chunks run
  one at a time). Per token and layer a tower keeps ``a`` bytes (bf16; twice under fp32), counted
  from what its backward needs with SDPA / flash attention (no ``s x s`` matrix):
  EVA02 ``2 (11h + 5m)`` (pre-LN, the fused qkv output that v views plus q and k after RoPE,
  sub-LN, SwiGLU hidden m with its LayerNorm), but ``2 * 7h`` in its last layer, which computes
  its output for the CLS token alone (pre-LN, qkv, the rotated keys), XLM-R ``2 (10h + 2i) + 2h``
  (the same attention, post-LN, GELU hidden i, two dropout masks of a byte); tests/test_memory.py
  checks both against the tensors autograd actually saves. With
  activation checkpointing a layer keeps only its input, ``2h`` bytes per token, and one layer at
  a time is recomputed in full. Only trained layers keep activations: a ``frozen`` tower none, a
  ``lock`` tower its ``unlocked_layers`` (nothing before them needs a gradient), a ``lora`` tower
  all of them (counted as ``full``: the adapters' inputs take the place of the frozen weights').
  Tokens: ``1 + patches x (1 - patch_dropout)`` per image, the
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
from .config import TowersConfig, TowerTraining, TrainConfig

GB = 1e9


def vision_bytes_per_token_layer(config: VisionConfig) -> int:
    return 2 * (11 * config.width + 5 * config.mlp_hidden_dim)


def vision_bytes_per_token_last_layer(config: VisionConfig) -> int:
    return 2 * 7 * config.width


def text_bytes_per_token_layer(config: TextConfig) -> int:
    return 2 * (10 * config.hidden_size + 2 * config.intermediate_size) + 2 * config.hidden_size


def vision_tokens(config: VisionConfig, image_size: int, patch_dropout: float) -> int:
    patches = (image_size // config.patch_size) ** 2
    return 1 + (max(1, int(patches * (1 - patch_dropout))) if patch_dropout else patches)


@dataclass(frozen=True)
class Tower:
    """One tower's activation cost for ``sequences`` inputs of ``tokens`` tokens."""

    layers: int  # the layers that keep activations for the backward (the trained ones, the last ones)
    width: int
    bytes_per_token_layer: int
    tokens: int
    sequences: int
    bytes_per_token_last_layer: int | None = None  # where the last layer keeps less (the vision tower)

    def stored(self, checkpointing: bool, scale: int) -> float:
        if checkpointing:
            per_token = 2 * self.width * self.layers
        else:
            last = self.bytes_per_token_last_layer or self.bytes_per_token_layer
            per_token = self.bytes_per_token_layer * (self.layers - 1) + last if self.layers else 0
        return scale * per_token * self.tokens * self.sequences

    def recomputed_layer(self, scale: int) -> float:
        return scale * self.bytes_per_token_layer * self.tokens * self.sequences


def trained_layers(towers: TowersConfig, tower: str, depth: int) -> int:
    """The layers of a tower whose activations the backward needs."""
    setting = getattr(towers, tower)
    return {"frozen": 0, "lock": min(setting.unlocked_layers, depth)}.get(setting.mode, depth)


def _stream_towers(kind: str, samples: int, model: CLIPConfig, towers: TowersConfig, image_tokens: int, context: int,
                   negatives: int) -> list[Tower]:
    text = Tower(trained_layers(towers, "text", model.text.depth), model.text.hidden_size,
                 text_bytes_per_token_layer(model.text), context, samples)
    if kind == "image_text":
        vision = Tower(trained_layers(towers, "vision", model.vision.depth), model.vision.width,
                       vision_bytes_per_token_layer(model.vision), image_tokens, samples,
                       vision_bytes_per_token_last_layer(model.vision))
        return [vision, text]
    texts = 2 + (negatives if kind == "text_triplet" else 0)
    return [Tower(text.layers, text.width, text.bytes_per_token_layer, context, samples * texts)]


def _activations(towers: list[Tower], checkpointing: bool, scale: int) -> float:
    stored = sum(t.stored(checkpointing, scale) for t in towers)
    return stored + (max(t.recomputed_layer(scale) for t in towers) if checkpointing else 0.0)


def parameter_count(model: CLIPConfig, image_size: int, towers: TowersConfig | None = None) -> tuple[int, int]:
    """(all, trainable) parameters at ``image_size``, with the towers set up as training sets them
    (on the meta device: nothing is allocated but LoRA's small factors)."""
    from ..factory import create_model
    from .trainable import apply_towers, trainable_count

    model = copy.deepcopy(model)
    model.vision.image_size = image_size
    built = create_model(model, device="meta")
    apply_towers(built, towers or TowersConfig())
    return sum(p.numel() for p in built.parameters()), trainable_count(built)


def model_state_bytes(params: int, world_size: int, zero_stage: int, bf16: bool,
                      trainable: int | None = None) -> dict[str, float]:
    weights, grads, optimizer = (2, 2, 12) if bf16 else (4, 4, 8)
    trainable = params if trainable is None else trainable

    def shard(count: int, bytes_per_param: int, stage: int) -> float:
        return count * bytes_per_param / (world_size if zero_stage >= stage else 1)

    return {"weights": shard(params, weights, 3), "gradients": shard(trainable, grads, 2),
            "optimizer": shard(trainable, optimizer, 1)}


def estimate_memory(config: TrainConfig, model: CLIPConfig, world_size: int) -> dict:
    """Peak bytes per GPU by part, for each image size of the stage (see the module docstring)."""
    bf16 = config.precision == "bf16"
    scale = 1 if bf16 else 2
    patch_dropout = model.vision.patch_dropout if config.clip.patch_dropout is None else config.clip.patch_dropout
    dims = config.loss.matryoshka_dims or model.matryoshka_dims
    sizes = sorted({config.data.image_size, *(p.image_size for p in config.clip.resolution_schedule)})
    phases = []
    for image_size in sizes:
        params, trainable = parameter_count(model, image_size, config.clip.towers)
        states = model_state_bytes(params, world_size, config.zero_stage, bf16, trainable)
        tokens = vision_tokens(model.vision, image_size, patch_dropout)
        activations, losses, embeddings = [], [], 0.0
        for name, stream in config.data.streams.items():
            per_rank = stream.batch_size // world_size
            chunk = config.grad_cache_chunk.get(name, per_rank)
            negatives = stream.num_negatives if stream.kind == "text_triplet" else 0
            towers = _stream_towers(stream.kind, chunk, model, config.clip.towers, tokens, config.data.context(name),
                                    negatives)
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
            "trainable_parameters": trainable,
            "gb": {key: value / GB for key, value in parts.items()},
            "total_gb": sum(parts.values()) / GB,
        })
    return {
        "world_size": world_size,
        "precision": config.precision,
        "zero_stage": config.zero_stage,
        "gradient_checkpointing": config.gradient_checkpointing,
        "grad_cache_chunk": dict(config.grad_cache_chunk),
        "towers": _towers_label(config.clip.towers),
        "per_rank_batch": {name: s.batch_size // world_size for name, s in config.data.streams.items()},
        "phases": phases,
        "peak_gb": max(p["total_gb"] for p in phases),
    }


def _towers_label(towers: TowersConfig) -> dict[str, str]:
    return {"vision": towers.vision.label, "text": towers.text.label}


# (vision, text) settings compared by ``mmclip info --memory --towers-table``, most memory first.
TOWER_SETTINGS = (
    ("full", "full"), ("full", "lora"), ("lock:4", "lock:4"), ("lock:0", "full"), ("lora", "lora"),
    ("lock:4", "lora"), ("lock:0", "lock:4"), ("lock:0", "lora"), ("frozen", "lora"),
)
DEVICE_GB = (24, 40, 80)


def towers_table(config: TrainConfig, model: CLIPConfig, world_size: int) -> list[dict]:
    """The estimate of the stage under each of :data:`TOWER_SETTINGS` (its other settings unchanged)."""
    rows = []
    for vision, text in TOWER_SETTINGS:
        variant = copy.deepcopy(config)
        variant.clip.towers = TowersConfig(TowerTraining.parse(vision), TowerTraining.parse(text),
                                           config.clip.towers.lora)
        estimate = estimate_memory(variant, model, world_size)
        phase = max(estimate["phases"], key=lambda p: p["total_gb"])
        rows.append({"vision": vision, "text": text, "trainable_parameters": phase["trainable_parameters"],
                     "gb": phase["gb"], "peak_gb": estimate["peak_gb"]})
    return rows


def format_towers_table(rows: list[dict], estimate: dict, title: str) -> str:
    """A markdown table: one row per tower setting, its peak and whether it fits 24 / 40 / 80 GB."""
    lines = [
        f"{title}: {estimate['world_size']} rank(s), {estimate['precision']}, ZeRO-{estimate['zero_stage']}, "
        f"per-rank batch {estimate['per_rank_batch']}, GradCache chunks {estimate['grad_cache_chunk'] or 'none'}, "
        f"activation checkpointing {'on' if estimate['gradient_checkpointing'] else 'off'}",
        "",
        "| vision | text | trained params | weights + grads + Adam GB | activations GB | peak GB | "
        + " | ".join(f"{gb} GB" for gb in DEVICE_GB) + " |",
        "|---|---|---:|---:|---:|---:|" + "---|" * len(DEVICE_GB),
    ]
    for row in rows:
        states = row["gb"]["weights"] + row["gb"]["gradients"] + row["gb"]["optimizer"]
        fits = " | ".join("fits" if row["peak_gb"] <= gb else "no" for gb in DEVICE_GB)
        lines.append(f"| {row['vision']} | {row['text']} | {row['trainable_parameters'] / 1e6:.1f}M | {states:.1f} | "
                     f"{row['gb']['activations']:.1f} | {row['peak_gb']:.1f} | {fits} |")
    return "\n".join(lines)


def format_memory(estimate: dict, title: str, device_gb: float) -> str:
    trainable = estimate["phases"][-1]
    lines = [
        f"stage: {title}",
        f"  towers {estimate['towers']}: {trainable['trainable_parameters'] / 1e6:.1f}M of "
        f"{trainable['parameters'] / 1e6:.1f}M parameters train",
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
