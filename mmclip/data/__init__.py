"""Training data: the shard format, streaming loaders, image transforms and tokenization.

Names are imported on first use (as in ``mmclip.models``): reading or inspecting shards loads
neither the loader's torch DataLoader nor transformers' tokenizers.
"""

from ..lazy import lazy_exports

_EXPORTS = {
    "DataConfig": ".config",
    "StreamConfig": ".config",
    "MultiStreamLoader": ".loader",
    "StreamDataset": ".loader",
    "ImageTransform": ".transforms",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
