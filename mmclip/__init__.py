"""mmclip: training jina-clip-v2-style multilingual multimodal embeddings.

``create_model``, ``load_model_config`` and ``MMCLIP`` are imported on first use, so ``import
mmclip`` (and ``mmclip --help``) stays cheap: no torch until a model is built, and LUSIFER's
Mistral only when LUSIFER is used.
"""

from .config import ConfigError, load_config
from .lazy import lazy_exports
from .models.configuration import CLIPConfig, TextConfig, VisionConfig

__version__ = "0.1.0"

__all__ = [
    "CLIPConfig",
    "ConfigError",
    "MMCLIP",
    "TextConfig",
    "VisionConfig",
    "create_model",
    "load_config",
    "load_model_config",
]

__getattr__ = lazy_exports(
    __name__, {"create_model": ".factory", "load_model_config": ".factory", "MMCLIP": ".models.clip"}
)
