"""mmclip: training jina-clip-v2-style multilingual multimodal embeddings."""

from .config import ConfigError, load_config
from .factory import create_model, load_model_config
from .models import MMCLIP, CLIPConfig, TextConfig, VisionConfig

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
