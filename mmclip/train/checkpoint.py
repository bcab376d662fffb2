"""Step checkpoints that a killed run can always resume from.

Layout of ``OUTPUT/checkpoints/step_000123/``::

    deepspeed/            engine.save_checkpoint: module, optimizer (ZeRO partitions), schedule
    rank_000.json ...     per rank: loader state and RNG states
    trainer_state.json    step, samples seen per stream, image size, config hash, and the size and
                          checksum of every other file (:mod:`mmclip.integrity`)
    model.safetensors     the full fp32 state dict (MMCLIP, or LUSIFER with LoRA merged), readable without DeepSpeed
    model.yaml            its model config (at the checkpoint's image size)

Everything is written into ``step_000123.tmp/``; after a barrier rank 0 writes the state file
last (atomically, after flushing every file to disk), renames the directory (atomic) and replaces
``latest``. Older ones beyond ``keep_last`` are deleted only after the new one is complete. A
checkpoint counts only when every file matches the state file's manifest: resume skips damaged
ones (a truncated copy, a full disk, a lost rank file) with a warning and takes the next.
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
import yaml
from safetensors.torch import load_file, save_file

from .. import integrity
from ..config import ConfigError
from ..models import MMCLIP
from .distributed import DistEnv, barrier

logger = logging.getLogger(__name__)

STEP_DIR = re.compile(r"^step_(\d+)$")
DEEPSPEED_TAG = "deepspeed"
STATE_FILE = "trainer_state.json"
WEIGHTS_FILE = "model.safetensors"
LOGIT_SCALES = ("logit_scale_image_text", "logit_scale_text_text")  # trained as [1], exported 0-d as in MMCLIP


def checkpoint_dir(output: Path, step: int) -> Path:
    return output / "checkpoints" / f"step_{step:06d}"


def candidates(directory: str | Path) -> list[tuple[int, Path]]:
    """``(step, dir)`` of every checkpoint directory under ``directory`` (a run dir or its ``checkpoints/``),
    complete or not (unfinished ``.tmp`` ones excluded)."""
    directory = Path(directory)
    if (directory / "checkpoints").is_dir():
        directory = directory / "checkpoints"
    if not directory.is_dir():
        return []
    return [(int(match.group(1)), path) for path in directory.iterdir() if (match := STEP_DIR.match(path.name))]


def find_latest(directory: str | Path) -> Path | None:
    """The newest intact checkpoint under ``directory``, if any; damaged newer ones are skipped with a warning."""
    return integrity.newest_intact(candidates(directory), STATE_FILE)


def verify(path: Path) -> None:
    """Raise :class:`mmclip.integrity.IntegrityError` unless the checkpoint ``path`` is intact."""
    integrity.read_verified_state(path, STATE_FILE)


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


def model_config_dict(model: MMCLIP) -> dict[str, Any]:
    """The model config as a YAML-able dict of init fields only (derived properties left out)."""

    def init_fields(node: Any) -> Any:
        if dataclasses.is_dataclass(node):
            return {f.name: init_fields(getattr(node, f.name)) for f in dataclasses.fields(node) if f.init}
        return node

    return init_fields(model.config)


def _full_fp32_state_dict(engine, tmp: Path) -> dict[str, torch.Tensor]:
    """fp32 weights: the module's own where they are complete and fp32, else the ZeRO fp32 masters."""
    if engine.zero_optimization_stage() < 3 and not engine.bfloat16_enabled():
        weights = engine.module.state_dict()
    else:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        weights = get_fp32_state_dict_from_zero_checkpoint(str(tmp), tag=DEEPSPEED_TAG)
    weights = {k: v.detach().float().cpu().contiguous() for k, v in weights.items()}
    return {k: v.reshape(()) if k in LOGIT_SCALES else v for k, v in weights.items()}


def save_checkpoint(
    engine, output: Path, env: DistEnv, state: dict[str, Any], loader_state: dict[str, Any], keep_last: int,
    export_weights: Callable[[Any, dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Write the checkpoint of ``state["step"]`` (collective: every rank calls it).

    ``export_weights(module, state_dict)`` turns the full fp32 state dict into ``model.safetensors``
    (LUSIFER merges its LoRA adapters there); the engine's own checkpoint keeps the module as trained.
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
        weights = _full_fp32_state_dict(engine, tmp)
        if export_weights is not None:
            weights = export_weights(engine.module, weights)
        save_file(weights, str(tmp / WEIGHTS_FILE))
        (tmp / "model.yaml").write_text(yaml.safe_dump(model_config_dict(engine.module), sort_keys=False))
        files = integrity.build_manifest(tmp)
        integrity.write_json_atomic(tmp / STATE_FILE, {**state, "files": files})  # last: marks the content complete
        integrity.replace_directory(tmp, final)  # final exists when a step is saved again (resolution switch)
        latest = final.parent / "latest"
        (final.parent / "latest.tmp").write_text(final.name + "\n")
        os.replace(final.parent / "latest.tmp", latest)
        _prune(final.parent, keep_last)
        logger.info("saved checkpoint %s", final)
    barrier()
    return final


def _prune(directory: Path, keep_last: int) -> None:
    for _, path in sorted(candidates(directory))[:-keep_last]:
        (path / STATE_FILE).unlink(missing_ok=True)  # first: a deletion cut short leaves no complete-looking dir
        shutil.rmtree(path, ignore_errors=True)


def load_checkpoint(engine, path: Path, env: DistEnv) -> tuple[dict[str, Any], dict[str, Any]]:
    """Restore engine (module, optimizer, schedule) and RNG; return the trainer state and this rank's loader state."""
    rank_file = path / f"rank_{env.rank:03d}.json"
    if not rank_file.is_file():  # the checkpoint verified, so it was saved by fewer ranks
        raise ConfigError(f"{path}: no state for rank {env.rank}; resume with the world size it was saved with")
    load_path, _ = engine.load_checkpoint(str(path), tag=DEEPSPEED_TAG)
    if load_path is None:
        raise RuntimeError(f"{path}: DeepSpeed could not load its checkpoint")
    rank_state = json.loads(rank_file.read_text())
    _set_rng_state(rank_state["rng"])
    return read_state(path), rank_state["loader"]


def read_state(path: Path) -> dict[str, Any]:
    """The trainer state of a verified checkpoint (its file manifest left out)."""
    state = json.loads((path / STATE_FILE).read_text())
    state.pop("files", None)
    return state


def load_model_weights(model: MMCLIP, path: Path) -> None:
    """Load ``model.safetensors`` of a checkpoint into ``model``, first matching its vision grid.

    The tower is moved to the checkpoint's resolution so the position embedding loads as trained;
    the caller then resizes it to the stage's own.
    """
    weights = read_weights(path)
    grid = round((weights["vision.pos_embed"].shape[1] - 1) ** 0.5)
    # Compare grids, not sizes: 512 px and 504 px share the 36x36 grid, and 512 must stay 512.
    if grid != model.vision.config.grid_size:
        model.vision.set_image_size(grid * model.vision.config.patch_size)
    model.load_state_dict(weights)


def verify_source(path: Path) -> None:
    """Verify the checkpoint that weights ``path`` (a checkpoint dir or a file in one) come from, if any."""
    checkpoint = path if path.is_dir() else path.parent
    if (checkpoint / STATE_FILE).is_file():
        verify(checkpoint)


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """``model.safetensors`` of a checkpoint (or the file itself), after verifying the checkpoint it belongs to."""
    verify_source(path)
    return load_file(str(path / WEIGHTS_FILE if path.is_dir() else path))
