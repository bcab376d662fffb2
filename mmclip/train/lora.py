"""peft LoRA for the parts a stage trains: adapters injected in place, merged into plain weights for checkpoints.

``inject_adapter_in_model`` makes the adapters ordinary parameters of the module (no PeftModel
wrapper), so the engine, its checkpoints and exact resume carry them like any other weight; the
base weights are frozen. A checkpoint's ``model.safetensors`` holds the merged weights, under the
module's own names, which is what ``init_from`` and ``mmclip export`` read.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import LoraSettings

# Every linear layer of each part, matched by peft against module names (a list: name suffixes;
# a string: a full-match regex). LUSIFER: the reference's find_all_linear_names, LM head excluded.
# The dual encoder's towers: the blocks' linears only, so the patch embedding's conv (also named
# ``proj``) and the projections stay as the tower mode sets them.
LORA_TARGETS: dict[str, list[str] | str] = {
    "encoder": ["Wqkv", "out_proj", "fc1", "fc2"],
    "llm": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "vision": r"blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(w12|w3))",
    "text": r"layers\.\d+\.(mixer\.(Wqkv|out_proj)|mlp\.(fc1|fc2))",
}
LORA_KEY = ".lora_A.default.weight"


def add_lora(part: nn.Module, name: str, settings: LoraSettings) -> None:
    """peft LoRA adapters in place on ``part`` (its own weights frozen, the adapters trainable)."""
    from peft import LoraConfig, inject_adapter_in_model

    lora = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=LORA_TARGETS[name], bias="none")
    inject_adapter_in_model(lora, part)


def merge_lora(weights: dict[str, torch.Tensor], scaling: float) -> dict[str, torch.Tensor]:
    """A state dict with peft LoRA layers folded into plain ``Linear`` weights: ``W + scaling * B @ A``
    (peft's ``get_delta_weight`` for a Linear), under the module's own names."""
    merged = {}
    for key, value in weights.items():
        if ".lora_" in key:
            continue
        module, base, part = key.rpartition(".base_layer.")
        if not base:
            merged[key] = value
            continue
        if part == "weight" and f"{module}{LORA_KEY}" in weights:
            lora_a, lora_b = weights[f"{module}{LORA_KEY}"], weights[f"{module}.lora_B.default.weight"]
            value = value + scaling * (lora_b.float() @ lora_a.float()).to(value.dtype)
        merged[f"{module}.{part}"] = value
    return merged
