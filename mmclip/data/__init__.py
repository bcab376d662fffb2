"""Training data: the shard format, streaming loaders, image transforms and tokenization.

Names are imported on first use (as in ``mmclip.models``): reading or inspecting shards loads
neither the loader's torch DataLoader nor transformers' tokenizers.
"""

import importlib

_EXPORTS = {
    "DataConfig": "config",
    "StreamConfig": "config",
    "MultiStreamLoader": "loader",
    "StreamDataset": "loader",
    "ImageTransform": "transforms",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
