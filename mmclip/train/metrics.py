"""Rank 0's training log: ``log.jsonl`` (one JSON object per logged step), TensorBoard scalars and,
with ``logging.wandb``, the same scalars in a Weights & Biases run (files under ``OUTPUT/wandb``)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from ..data.config import DataConfig
from ..info import TRAIN_FLOPS_PER_FORWARD, text_forward_flops, vision_forward_flops
from ..models import CLIPConfig

# Dense bf16 peak FLOP/s by device-name substring (no sparsity); MFU is None elsewhere (CPU).
logger = logging.getLogger(__name__)

PEAK_FLOPS = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12, "L40S": 362.05e12}


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_FLOPS.items() if key in name), None)


def step_flops(model_config: CLIPConfig, data: DataConfig, batches: dict[str, dict], image_size: int) -> float:
    """Analytic training FLOPs of one step on this rank (texts at their padded length: the work done)."""
    vision, text = model_config.vision, model_config.text
    total = 0.0
    for name, batch in batches.items():
        kind = data.streams[name].kind
        if kind == "image_text":
            batch_size = batch["input_ids"].shape[0]
            total += batch_size * vision_forward_flops(vision, image_size, vision.patch_dropout)
            total += batch_size * text_forward_flops(text, batch["input_ids"].shape[1])
        else:
            for ids in ("query_ids", "positive_ids", "negative_ids"):
                if ids in batch:
                    shape = batch[ids].shape
                    total += shape[:-1].numel() * text_forward_flops(text, shape[-1])
    return TRAIN_FLOPS_PER_FORWARD * total


class MetricsLog:
    """Appends one record per logged step; a resumed run first drops the records past its checkpoint."""

    def __init__(self, output: Path, tensorboard: bool, resume_step: int | None = None,
                 wandb_project: str | None = None, config: dict[str, Any] | None = None):
        self.path = output / "log.jsonl"
        if resume_step is not None:
            truncate_jsonl(self.path, resume_step)
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(output / "tensorboard"), purge_step=resume_step)
        self.wandb = None
        if wandb_project is not None:
            import wandb

            # One W&B run per run directory; a resumed run continues it (steps past the checkpoint
            # are logged again, as in log.jsonl).
            self.wandb = wandb.init(project=wandb_project, name=output.name, dir=str(output), config=config,
                                    id=_wandb_id(output), resume="allow")

    def log(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        scalars = {k: v for k, v in _flatten(record).items() if k != "step" and isinstance(v, (int, float))}
        if self.writer is not None:
            for key, value in scalars.items():
                self.writer.add_scalar(key, value, record["step"])
            self.writer.flush()
        if self.wandb is not None:
            self.wandb.log(scalars, step=record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()


def _wandb_id(output: Path) -> str:
    import hashlib

    return hashlib.sha256(str(output.resolve()).encode()).hexdigest()[:16]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a log written one JSON line per record (``log.jsonl``, ``keys/rank_*.jsonl``)."""
    return [record for _, record in _records(path)]


def _records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(line, record)`` pairs; a line cut short by a SIGKILL or a full disk mid-write (the last one,
    or one a later run appended after) is dropped with a warning naming it."""
    records, torn = [], []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            records.append((line, json.loads(line)))
        except ValueError:
            torn.append(number)
    if torn:
        logger.warning("%s: dropping torn line(s) %s (the writer died mid-line)", path, ", ".join(map(str, torn)))
    return records


def truncate_jsonl(path: Path, step: int) -> None:
    """Keep only the records up to ``step`` (a killed run logged steps its checkpoint did not keep)."""
    if path.is_file():
        kept = "".join(line + "\n" for line, record in _records(path) if record["step"] <= step)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(kept)
        os.replace(tmp, path)


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        else:
            flat[prefix + key] = value
    return flat
