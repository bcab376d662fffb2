"""Training: one stage of the jina-clip-v2 recipe per run, with DeepSpeed, exact resume and logs.

``train`` and ``load_train_config`` are imported on first use (the loop pulls in DeepSpeed's
dependencies), so reading a stage config stays cheap.
"""

from ..lazy import lazy_exports
from .config import TrainConfig

__all__ = ["TrainConfig", "load_train_config", "train"]
__getattr__ = lazy_exports(__name__, {"train": ".loop", "load_train_config": ".loop"})
