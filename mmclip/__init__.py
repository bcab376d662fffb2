"""mmclip: training jina-clip-v2-style multilingual multimodal embeddings.

The public names are imported on first use, so ``import mmclip`` (and ``mmclip --help``) stays
cheap: no torch until a model is built, never LUSIFER's Mistral unless LUSIFER is used.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "ConfigError": "config",
    "load_config": "config",
    "create_model": "factory",
    "load_model_config": "factory",
    "CLIPConfig": "models",
    "MMCLIP": "models",
    "TextConfig": "models",
    "VisionConfig": "models",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
