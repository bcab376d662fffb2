"""Training data: the shard format, streaming loaders, image transforms and tokenization."""

from .config import DataConfig, StreamConfig
from .loader import MultiStreamLoader, StreamDataset
from .transforms import ImageTransform

__all__ = ["DataConfig", "ImageTransform", "MultiStreamLoader", "StreamConfig", "StreamDataset"]
