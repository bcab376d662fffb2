"""Training: one stage of the jina-clip-v2 recipe per run, with DeepSpeed, exact resume and logs.

``train`` and ``load_train_config`` are imported on first use (the loop pulls in DeepSpeed's
dependencies), so reading a stage config stays cheap.
"""

from .config import TrainConfig


def __getattr__(name: str):
    if name in ("train", "load_train_config"):
        from . import loop

        return getattr(loop, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["TrainConfig", "load_train_config", "train"]
