"""Training: one stage of the jina-clip-v2 recipe per run, with DeepSpeed, exact resume and logs."""

from .config import TrainConfig
from .trainer import load_train_config, train

__all__ = ["TrainConfig", "load_train_config", "train"]
