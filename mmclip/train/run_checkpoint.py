"""Run checkpoints that a killed run can always resume from; they know no model by name.

Layout of ``OUTPUT/checkpoints/step_000123/``::

    deepspeed/            engine.save_checkpoint: module, optimizer (ZeRO partitions), schedule
    rank_000.json ...     per rank: loader state and RNG states
    trainer_state.json    step, samples seen per stream, the family's phase, config hash
    model.yaml, model.safetensors, tokenizer/ ...
                          the model checkpoint (:mod:`mmclip.checkpoint`), written by the model
                          family from the full fp32 weights: readable without DeepSpeed

Everything is written into ``step_000123.tmp/``; after a barrier rank 0 renames it (atomic) and
replaces ``latest``, so a directory without ``.tmp`` is complete. Older ones beyond ``keep_last``
are deleted only after the new one is complete.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import torch

from .. import checkpoint as model_checkpoint
from ..config import ConfigError
from .distributed import DistEnv, barrier

logger = logging.getLogger(__name__)

STEP_DIR = re.compile(r"^step_(\d+)$")
DEEPSPEED_TAG = "deepspeed"
STATE_FILE = "trainer_state.json"
# Writes the model checkpoint into a directory from the engine's module and its full fp32 weights.
WriteModel = Callable[[Path, Any, dict[str, torch.Tensor]], None]


def checkpoint_dir(output: Path, step: int) -> Path:
    return output / "checkpoints" / f"step_{step:06d}"


def find_latest(directory: str | Path) -> Path | None:
    """The newest complete checkpoint under ``directory`` (a run dir or its ``checkpoints/``), if any."""
    directory = Path(directory)
    if (directory / "checkpoints").is_dir():
        directory = directory / "checkpoints"
    if not directory.is_dir():
        return None
    complete = [
        (int(match.group(1)), path)
        for path in directory.iterdir()
        if (match := STEP_DIR.match(path.name)) and (path / STATE_FILE).is_file()
    ]
    return max(complete)[1] if complete else None


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state().tolist(), "python": _to_json(random.getstate())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state().tolist()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    random.setstate(_to_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(torch.tensor(state["cuda"], dtype=torch.uint8))


def _to_json(value: Any) -> Any:
    return [_to_json(v) for v in value] if isinstance(value, (tuple, list)) else value


def _to_tuple(value: Any) -> Any:
    return tuple(_to_tuple(v) for v in value) if isinstance(value, list) else value


def _full_fp32_state_dict(engine, tmp: Path) -> dict[str, torch.Tensor]:
    """fp32 weights: the module's own where they are complete and fp32, else the ZeRO fp32 masters."""
    if engine.zero_optimization_stage() < 3 and not engine.bfloat16_enabled():
        weights = engine.module.state_dict()
    else:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        weights = get_fp32_state_dict_from_zero_checkpoint(str(tmp), tag=DEEPSPEED_TAG)
    return {k: v.detach().float().cpu().contiguous() for k, v in weights.items()}


def save_checkpoint(
    engine, output: Path, env: DistEnv, state: dict[str, Any], loader_state: dict[str, Any], keep_last: int,
    write_model: WriteModel,
) -> Path:
    """Write the checkpoint of ``state["step"]`` (collective: every rank calls it).

    ``write_model(directory, module, weights)`` writes the model checkpoint from the full fp32 state
    dict (the family's: LUSIFER merges its LoRA adapters there); the engine's own checkpoint keeps
    the module as trained.
    """
    final = checkpoint_dir(output, state["step"])
    tmp = final.with_name(final.name + ".tmp")
    if env.is_main:
        shutil.rmtree(tmp, ignore_errors=True)  # left by a killed run
        tmp.mkdir(parents=True)
    barrier()
    engine.save_checkpoint(str(tmp), tag=DEEPSPEED_TAG, save_latest=False)
    (tmp / f"rank_{env.rank:03d}.json").write_text(json.dumps({"loader": loader_state, "rng": _rng_state()}))
    barrier()
    if env.is_main:
        write_model(tmp, engine.module, _full_fp32_state_dict(engine, tmp))
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))  # last: marks the content complete
        if final.exists():  # the same step saved again (a phase change after resume)
            shutil.rmtree(final)
        os.replace(tmp, final)
        latest = final.parent / "latest"
        (final.parent / "latest.tmp").write_text(final.name + "\n")
        os.replace(final.parent / "latest.tmp", latest)
        _prune(final.parent, keep_last)
        logger.info("saved checkpoint %s", final)
    barrier()
    return final


def _prune(directory: Path, keep_last: int) -> None:
    steps = sorted(
        (int(match.group(1)), path) for path in directory.iterdir() if (match := STEP_DIR.match(path.name))
    )
    for _, path in steps[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)


def load_checkpoint(engine, path: Path, env: DistEnv) -> tuple[dict[str, Any], dict[str, Any]]:
    """Restore engine (module, optimizer, schedule) and RNG; return the trainer state and this rank's loader state."""
    rank_file = path / f"rank_{env.rank:03d}.json"
    if not rank_file.is_file():
        raise FileNotFoundError(f"{path}: no state for rank {env.rank}; resume with the world size it was saved with")
    load_path, _ = engine.load_checkpoint(str(path), tag=DEEPSPEED_TAG)
    if load_path is None:
        raise RuntimeError(f"{path}: DeepSpeed could not load its checkpoint")
    rank_state = json.loads(rank_file.read_text())
    _set_rng_state(rank_state["rng"])
    return read_state(path), rank_state["loader"]


def read_state(path: Path) -> dict[str, Any]:
    return json.loads((path / STATE_FILE).read_text())


def resolve(spec: str | Path, key: str, accept: Callable[[Path], bool]) -> Path:
    """The checkpoint ``spec`` names: itself when ``accept`` takes it, else the newest complete one
    under it (a run directory or its ``checkpoints/``); ``key`` names the setting in the error."""
    path = Path(spec)
    if accept(path):
        return path
    latest = find_latest(path)
    if latest is None:
        raise ConfigError(f"{key}: {spec} is not a complete checkpoint, nor a run directory with one")
    return latest


def resolve_resume(resume: str | None, output: Path) -> Path | None:
    """``--resume``: ``auto`` (the newest complete checkpoint in ``output``, or a fresh start) or a path."""
    if resume is None:
        return None
    if resume == "auto":
        path = find_latest(output)
        logger.info("resume auto: %s", path or "no complete checkpoint yet, starting fresh")
        return path
    return resolve(resume, "--resume", lambda path: (path / STATE_FILE).is_file())


def resolve_init_from(init_from: str | None) -> Path | None:
    """``init_from``: a model checkpoint, its ``model.safetensors``, or a run directory (its newest)."""
    if init_from is None:
        return None
    return resolve(init_from, "init_from", lambda path: path.is_file() or model_checkpoint.is_checkpoint(path))
