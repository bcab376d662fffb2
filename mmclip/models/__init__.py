"""mmclip's models: torch and transformers only (xformers / flash_attn optional).

The modules of this package are copied verbatim into exported checkpoints as their remote code
(this file is not). Names are imported on first use, so ``import mmclip`` loads neither LUSIFER nor
transformers' Mistral: ``MMCLIP`` / ``LusiferModel`` are the torch modules, ``MMCLIPModel`` /
``LusiferHFModel`` (``modeling_*.py``) their Hugging Face wrappers.
"""

from ..lazy import lazy_exports

_EXPORTS = {
    "CLIPConfig": ".configuration",
    "LusiferConfig": ".configuration",
    "TextConfig": ".configuration",
    "VisionConfig": ".configuration",
    "CLIPOutput": ".clip",
    "MMCLIP": ".clip",
    "EvaVisionTower": ".eva",
    "LusiferModel": ".lusifer",
    "LusiferOutput": ".lusifer",
    "XLMRobertaTextTower": ".xlm_roberta",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
