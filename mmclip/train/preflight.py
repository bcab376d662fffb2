"""The checks of a stage's inputs that read files, run before any expensive work (DeepSpeed, the model).

The config checks (:func:`mmclip.train.load_train_config`) see only the YAML; these open what it
names: every stream's shard sets (present, of the stream's kind, not empty), the tokenizer, each
outside checkpoint's layout from its keys alone (a text checkpoint named as ``vision.pretrained``
is refused here, naming what it is); ``init_from`` and ``--resume`` are verified where they are
resolved (:mod:`.run_checkpoint`). Each raises the project's error for its kind, which the CLI prints as one line with exit status 2.
"""

from __future__ import annotations

import logging
from .. import weights
from ..data.sources import resolve_stream
from ..models import CLIPConfig
from ..tokenizer import load_tokenizer
from .config import TrainConfig

logger = logging.getLogger(__name__)


def check_inputs(config: TrainConfig, model_config) -> None:
    for name, stream in config.data.streams.items():
        resolve_stream(name, stream.kind, stream.shards, config.data.index_cache)
    if isinstance(model_config, CLIPConfig):
        load_tokenizer(model_config.text.tokenizer, model_config.text)
        for tower, path in (("clip", model_config.pretrained), ("vision", model_config.vision.pretrained),
                            ("text", model_config.text.pretrained)):
            if path:
                logger.info("%s: %s layout", path, weights.check_layout(path, tower))
