"""Which weights of the dual encoder train: ``full``, ``frozen``, ``lock`` or ``lora`` per tower (``clip.towers``).

Frozen weights have ``requires_grad=False`` before the engine is built, so they get no gradients
and the optimizer never sees them (:func:`mmclip.train.optim.param_groups` keeps trainable
parameters only): no Adam moments, no fp32 master copy. A locked or frozen tower's early layers
then store no activations either, as nothing upstream needs a gradient. LoRA adapters are peft's
(:mod:`.lora`); checkpoints hold them merged, so ``init_from`` and ``mmclip export`` see a plain model.
"""

from __future__ import annotations

from torch import nn

from ..config import ConfigError
from ..models import MMCLIP
from .config import TowersConfig, TowerTraining
from .lora import add_lora, merge_lora

# Per tower: its blocks, and the modules after them that train with the last unlocked block.
_BLOCKS = {"vision": "blocks", "text": "layers"}
_AFTER_BLOCKS = {"vision": ("norm",), "text": ()}


def tower_depth(model: MMCLIP, tower: str) -> int:
    return len(getattr(getattr(model, tower), _BLOCKS[tower]))


def apply_towers(model: MMCLIP, towers: TowersConfig) -> None:
    """Freeze, lock or add LoRA to each tower in place, as ``towers`` says (``full`` changes nothing)."""
    for name in ("vision", "text"):
        setting: TowerTraining = getattr(towers, name)
        tower, projection = getattr(model, name), getattr(model, f"{name}_proj")
        if setting.mode == "full":
            continue
        tower.requires_grad_(False)
        if setting.mode == "frozen":
            projection.requires_grad_(False)
        elif setting.mode == "lock":
            depth = tower_depth(model, name)
            if setting.unlocked_layers > depth:
                raise ConfigError(f"clip.towers.{name}.unlocked_layers: {setting.unlocked_layers} > the tower's "
                                  f"{depth} blocks")
            if setting.unlocked_layers:
                blocks = getattr(tower, _BLOCKS[name])
                after = [getattr(tower, module) for module in _AFTER_BLOCKS[name]]
                for module in [*blocks[depth - setting.unlocked_layers:], *after]:
                    module.requires_grad_(True)
        else:  # lora
            add_lora(tower, name, towers.lora)


def uses_lora(towers: TowersConfig) -> bool:
    return "lora" in (towers.vision.mode, towers.text.mode)


def merged_weights(towers: TowersConfig, weights: dict) -> dict:
    """A checkpoint's state dict with the towers' LoRA folded into their weights (unchanged without LoRA)."""
    return merge_lora(weights, towers.lora.alpha / towers.lora.r) if uses_lora(towers) else weights


def trainable_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
