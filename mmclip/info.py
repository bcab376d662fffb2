"""What a model config costs: parameters per tower and analytic FLOPs per sample per stage.

FLOPs count multiply-adds as 2 and cover every matmul (projections, MLPs, attention scores and
weighted sums, the patch-embedding conv); norms, activations and RoPE are left out, as in the
usual MFU accounting. Training FLOPs are 3x forward (the backward pass costs twice the forward);
activation checkpointing recomputes the forward, which is hardware work but not model FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass

from .models import MMCLIP, CLIPConfig, TextConfig, VisionConfig

TRAIN_FLOPS_PER_FORWARD = 3


@dataclass(frozen=True)
class StageInputs:
    name: str
    image_size: int
    context_length: int


# The jina-clip-v2 recipe (paper Table 6): stage 1 ends at 384 px as a warm-up for stage 2.
RECIPE_STAGES = (
    StageInputs("stage1", 224, 77),
    StageInputs("stage1-end", 384, 77),
    StageInputs("stage2", 384, 512),
    StageInputs("stage3", 512, 512),
)


def vision_forward_flops(config: VisionConfig, image_size: int, patch_dropout: float = 0.0) -> float:
    """Forward FLOPs of one image through the EVA02 tower (kept patches only under patch dropout).

    The last block computes its output for the CLS token alone (``EvaVisionTower.forward``): q/k/v
    for every token, the rest for one query.
    """
    grid = image_size // config.patch_size
    num_patches = grid * grid
    kept = max(1, int(num_patches * (1.0 - patch_dropout))) if patch_dropout else num_patches
    tokens, width, hidden = 1 + kept, config.width, config.mlp_hidden_dim

    def block(queries: int) -> int:
        qkv = 2 * tokens * width * 3 * width
        scores_and_values = 2 * 2 * queries * tokens * width
        output_and_swiglu = 2 * queries * (width * width + width * 2 * hidden + hidden * width)
        return qkv + scores_and_values + output_and_swiglu

    patch_embed = 2 * num_patches * 3 * config.patch_size**2 * width
    return float(patch_embed + (config.depth - 1) * block(tokens) + block(1))


def text_forward_flops(config: TextConfig, context_length: int) -> float:
    """Forward FLOPs of one text of ``context_length`` tokens (no padding) through the text tower."""
    tokens, width = context_length, config.hidden_size
    projections = 2 * tokens * width * (3 * width + width)
    scores_and_values = 2 * 2 * tokens * tokens * width
    mlp = 2 * tokens * 2 * width * config.intermediate_size
    return float(config.depth * (projections + scores_and_values + mlp))


def count_parameters(model: MMCLIP) -> dict[str, dict[str, int]]:
    """Total and non-embedding parameters per tower (embedding tables and position tables excluded)."""
    embedding_names = {
        "vision": ("pos_embed", "cls_token"),
        "text": ("embeddings.",),
    }
    counts = {}
    for tower_name in ("vision", "text"):
        tower = getattr(model, tower_name)
        total = non_embedding = 0
        for name, param in tower.named_parameters():
            total += param.numel()
            if not name.startswith(embedding_names[tower_name]):
                non_embedding += param.numel()
        counts[tower_name] = {"total": total, "non_embedding": non_embedding}
    heads = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(("vision.", "text.")))
    counts["heads"] = {"total": heads, "non_embedding": heads}
    return counts


def model_info(config: CLIPConfig, stages: tuple[StageInputs, ...] = RECIPE_STAGES) -> dict:
    """Everything ``mmclip info`` reports, as plain data (built on the meta device: no weights)."""
    from .factory import create_model

    model = create_model(config, device="meta")
    stage_rows = []
    for stage in stages:
        vision = vision_forward_flops(config.vision, stage.image_size)
        text = text_forward_flops(config.text, stage.context_length)
        stage_rows.append(
            {
                "stage": stage.name,
                "image_size": stage.image_size,
                "context_length": stage.context_length,
                "vision_forward_gflops": vision / 1e9,
                "text_forward_gflops": text / 1e9,
                "image_text_pair_train_gflops": TRAIN_FLOPS_PER_FORWARD * (vision + text) / 1e9,
                "text_pair_train_gflops": TRAIN_FLOPS_PER_FORWARD * 2 * text / 1e9,
            }
        )
    return {
        "embed_dim": config.embed_dim,
        "matryoshka_dims": list(config.matryoshka_dims),
        "image_size": config.vision.image_size,
        "parameters": count_parameters(model),
        "flops_per_sample": stage_rows,
    }


def format_info(info: dict, title: str) -> str:
    """A human-readable report of :func:`model_info`."""
    params = info["parameters"]
    lines = [f"model: {title}"]
    for tower in ("vision", "text"):
        p = params[tower]
        lines.append(f"  {tower:<7} {p['total'] / 1e6:8.1f}M parameters ({p['non_embedding'] / 1e6:.1f}M non-embedding)")
    lines.append(f"  heads   {params['heads']['total']:>8d} parameters (projections, temperatures)")
    lines.append(f"  embedding dim {info['embed_dim']}, Matryoshka dims {info['matryoshka_dims']}")
    lines.append(f"  vision parameters counted at {info['image_size']} px (the position table grows with resolution)")
    lines.append("  GFLOPs per sample:")
    header = f"    {'stage':<11}{'px':>5}{'tokens':>8}{'vision fwd':>12}{'text fwd':>10}{'pair train':>12}{'text-pair train':>17}"
    lines.append(header)
    for row in info["flops_per_sample"]:
        lines.append(
            f"    {row['stage']:<11}{row['image_size']:>5}{row['context_length']:>8}"
            f"{row['vision_forward_gflops']:>12.1f}{row['text_forward_gflops']:>10.1f}"
            f"{row['image_text_pair_train_gflops']:>12.1f}{row['text_pair_train_gflops']:>17.1f}"
        )
    return "\n".join(lines)
