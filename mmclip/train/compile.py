"""``clip.compile: true`` in a stage config: both towers run under ``torch.compile``.

Each tower is compiled in place (``nn.Module.compile``), so parameter names, checkpoints and the
DeepSpeed engine see the same module. The first steps are slow while inductor compiles (and once
more per new caption length, after which lengths are traced as dynamic). The text tower's packing
(which tokens are real) is data-dependent, so it splits into a few graphs around it.

Fallback: if dynamo or inductor fails on a frame (no C++ compiler on a CPU machine, an op it
cannot trace), that frame runs eagerly with one warning from torch
(``torch._dynamo.config.suppress_errors``) and training goes on at eager speed; ``clip.compile: false``
turns it off entirely.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

logger = logging.getLogger(__name__)


def compile_towers(model: nn.Module) -> None:
    """Compile ``model.vision`` and ``model.text`` in place, falling back to eager per frame on failure."""
    torch._dynamo.config.suppress_errors = True
    towers = [name for name in ("vision", "text") if isinstance(getattr(model, name, None), nn.Module)]
    for name in towers:
        getattr(model, name).compile()
    logger.info("torch.compile: %s compiled (the first steps compile; frames that fail run eagerly)", " and ".join(towers))
