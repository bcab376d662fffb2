"""mmclip's models: torch and transformers only (xformers / flash_attn optional).

This package is copied verbatim into exported checkpoints as their remote code.
"""

from .clip import MMCLIP, CLIPOutput
from .configuration import CLIPConfig, LusiferConfig, TextConfig, VisionConfig
from .eva import EvaVisionTower
from .lusifer import LusiferModel, LusiferOutput
from .xlm_roberta import XLMRobertaTextTower

__all__ = [
    "CLIPConfig",
    "CLIPOutput",
    "EvaVisionTower",
    "LusiferConfig",
    "LusiferModel",
    "LusiferOutput",
    "MMCLIP",
    "TextConfig",
    "VisionConfig",
    "XLMRobertaTextTower",
]
