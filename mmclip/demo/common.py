"""What both demos share: a fresh output directory, every core, and the stage overrides that point a
shipped demo config at the generated corpus and chain it to the previous stage."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from ..config import load_yaml

logger = logging.getLogger(__name__)


def run_on_every_core(output: Path, run: Callable[[], object]) -> int:
    """``run()`` into a new (or empty) ``output`` with every core computing; the command's exit status."""
    import torch

    if output.exists() and any(output.iterdir()):
        logger.error("%s is not empty; the demo writes into a new directory", output)
        return 1
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        run()
    finally:
        torch.set_num_threads(threads)
    return 0


def stage_overrides(config_path: Path, output: Path, model_overrides: list[str], init_from: Path | None,
                    scale: float = 1.0) -> list[str]:
    """``--set`` strings for a demo stage: shards under ``output`` (the YAMLs name them relative to the
    demo directory), the corpus's tokenizers, ``init_from``; ``scale`` multiplies the steps, the
    warm-up and the resolution switches."""
    config = load_yaml(config_path)
    overrides = []
    for name, stream in config["data"]["streams"].items():
        shards = [str(output / shard) for shard in stream["shards"]]
        overrides.append(f"data.streams.{name}.shards={json.dumps(shards)}")
    overrides.append(f"model_overrides={json.dumps(model_overrides)}")
    if init_from is not None:
        overrides.append(f"init_from={json.dumps(str(init_from))}")
    if scale != 1.0:
        steps = max(2, round(config["steps"] * scale))
        warmup = round(config.get("optimizer", {}).get("warmup_steps", 0) * scale)
        overrides += [f"steps={steps}", f"optimizer.warmup_steps={warmup}"]
        if config.get("clip", {}).get("resolution_schedule"):
            schedule = [{**phase, "step": min(round(phase["step"] * scale), steps - 1)}
                        for phase in config["clip"]["resolution_schedule"]]
            # Switches rounded onto the same step: the later size wins.
            schedule = list({phase["step"]: phase for phase in schedule}.values())
            overrides.append(f"clip.resolution_schedule={json.dumps(schedule)}")
    return overrides
