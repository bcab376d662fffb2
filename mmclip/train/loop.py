"""``train``: one stage of the recipe, from a TrainConfig to checkpoints and a log.

The loop, per step: the family's phase (a new one: checkpoint, rebuild), one batch per stream, the
model family's losses (:mod:`.families`; for the dual encoder: embeddings, InfoNCE per stream with
its task's temperature, whole or by GradCache chunks, :mod:`.step`), backward and step through the
DeepSpeed engine, then the family's post-step update (the temperatures clamped); on SIGTERM /
SIGUSR1 a checkpoint and :class:`.preemption.Preempted`. Everything that can be wrong with a
config is checked before any work.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import hashlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml

from ..config import ConfigError, load_config
from ..data import MultiStreamLoader
from . import run_checkpoint as ckpt
from .config import TrainConfig
from .distributed import DistEnv, distributed_session, world_info
from .engine import build_engine
from .families import family_class
from .families.base import ModelFamily
from .metrics import MetricsLog, peak_flops, truncate_jsonl
from .optim import lr_per_tower
from .preemption import Preempted, StopRequest, watch_signals

logger = logging.getLogger(__name__)


def load_train_config(path: str | Path, overrides: list[str], world_size: int) -> tuple[TrainConfig, Any]:
    """The stage config and its model config (CLIP or LUSIFER, by ``family``), with every cross-check
    that needs both (keys named)."""
    config = load_config(TrainConfig, path, overrides)
    try:
        config.check_world_size(world_size)
    except ValueError as error:
        raise ConfigError(f"{path}: {error}") from None
    model_config = family_class(config.family).load_model_config(config, path)
    if config.init_from is not None and not Path(config.init_from).exists():
        raise ConfigError(f"{path}: init_from: no such file or directory: {config.init_from}")
    return config, model_config


def _per_rank_config(config: TrainConfig, world_size: int):
    data = copy.deepcopy(config.data)
    for stream in data.streams.values():
        stream.batch_size //= world_size
    return data


def _mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return values
    tensor = torch.tensor(list(values.values()), dtype=torch.float64)
    dist.all_reduce(tensor)
    return dict(zip(values, (tensor / dist.get_world_size()).tolist()))


def _summed_over_ranks(skipped: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return skipped
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, skipped)
    total: dict[str, dict[str, int]] = {}
    for rank_skipped in gathered:
        for name, reasons in rank_skipped.items():
            for reason, count in reasons.items():
                total.setdefault(name, {})[reason] = total.setdefault(name, {}).get(reason, 0) + count
    return total


def train(config_path: str | Path, output: str | Path, overrides: list[str] = (), resume: str | None = None) -> Path:
    """Run the stage; the final checkpoint's path. Raises :class:`Preempted` after a signal's checkpoint."""
    env = world_info()
    config, model_config = load_train_config(config_path, list(overrides), env.world_size)
    family = family_class(config.family)(config, model_config)
    output = Path(output)
    try:
        init_from = ckpt.resolve_init_from(config.init_from)
    except ConfigError as error:
        raise ConfigError(f"{config_path}: {error}") from None
    resume_path = ckpt.resolve_resume(resume, output)
    # Signals are watched from before the loader's workers fork, so they inherit the handler.
    with distributed_session(env) as device, watch_signals() as stop:
        return _run(config, family, env, device, output, init_from, resume_path, stop)


def _run(
    config: TrainConfig, family: ModelFamily, env: DistEnv, device: torch.device, output: Path,
    init_from: Path | None, resume_path: Path | None, stop: StopRequest,
) -> Path:
    resolved = yaml.safe_dump(dataclasses.asdict(config), sort_keys=False)
    config_hash = hashlib.sha256(resolved.encode()).hexdigest()[:16]
    if env.is_main:
        output.mkdir(parents=True, exist_ok=True)
        (output / "config.yaml").write_text(resolved)

    # The model is built in the phase its weights have: the checkpoint's when resuming.
    state = {"step": 0, "samples": {name: 0 for name in config.data.streams}, "phase": family.phase(0)}
    if resume_path is not None:
        state = ckpt.read_state(resume_path)
        if state.get("config_hash") != config_hash:
            logger.warning("resuming %s with a changed config", resume_path)
    model = family.build_model(state["phase"], init_from)
    engine, optimizer = build_engine(config, family, model, device, state["step"])
    data = _per_rank_config(config, env.world_size)

    def make_loader(phase) -> MultiStreamLoader:
        return family.make_loader(engine.module, data, phase, env.rank, env.world_size)

    loader = make_loader(state["phase"])
    keys_path = output / "keys" / f"rank_{env.rank:03d}.jsonl" if config.logging.sample_keys else None
    if resume_path is not None:
        state, loader_state = ckpt.load_checkpoint(engine, resume_path, env)
        loader.load_state_dict(loader_state)
        logger.info("resumed from %s at step %d", resume_path, state["step"])
        if keys_path is not None:
            truncate_jsonl(keys_path, state["step"])
    else:
        torch.manual_seed(config.seed + env.rank)  # per-rank dropout / patch-dropout draws
    if keys_path is not None:
        keys_path.parent.mkdir(parents=True, exist_ok=True)
    log = MetricsLog(output, config.logging.tensorboard, state["step"] if resume_path else None) if env.is_main else None

    dtype = torch.bfloat16 if engine.bfloat16_enabled() else torch.float32
    peak = peak_flops(device)
    progress = None
    if env.is_main and sys.stderr.isatty():
        from tqdm import tqdm

        progress = tqdm(total=config.steps, initial=state["step"], dynamic_ncols=True)

    def save() -> None:
        state["config_hash"] = config_hash
        ckpt.save_checkpoint(engine, output, env, state, loader.state_dict(), config.checkpoint.keep_last,
                             family.write_model)

    def backward(loss: torch.Tensor, last: bool) -> None:
        if config.grad_cache_chunk:  # chunks accumulate; gradients are reduced across ranks after the last
            engine.set_gradient_accumulation_boundary(last)
        engine.backward(loss)

    stopped_by = None
    batches_iter = iter(loader)
    window_start, window_samples, window_flops = time.perf_counter(), 0, 0.0
    while state["step"] < config.steps:
        step = state["step"]
        if (phase := family.phase(step)) != state["phase"]:
            # A new phase changes the model's shape (a resolution: the position embedding), so the
            # engine is rebuilt from this step's fp32 weights (Adam moments restart, the schedule continues).
            path = ckpt.checkpoint_dir(output, step)
            if not (path / ckpt.STATE_FILE).is_file():
                save()
            logger.info("step %d: phase %s -> %s", step, state["phase"], phase)
            del engine, optimizer, model
            gc.collect()
            model = family.build_model(phase, path)
            engine, optimizer = build_engine(config, family, model, device, step)
            state["phase"] = phase
            data_state = loader.state_dict()
            loader = make_loader(phase)
            loader.load_state_dict(data_state)
            batches_iter = iter(loader)

        batches = next(batches_iter)
        total, losses = family.step(engine, batches, dtype, device, backward)
        engine.step()
        family.after_step(engine.module)

        state["step"] = step = step + 1
        local = {name: len(batch["keys"]) for name, batch in batches.items()}
        for name, count in local.items():
            state["samples"][name] += count * env.world_size
        window_samples += sum(local.values())
        flops = family.step_flops(engine.module, batches, state["phase"])
        window_flops = None if flops is None or window_flops is None else window_flops + flops
        if keys_path is not None:
            with keys_path.open("a") as f:
                f.write(json.dumps({"step": step, **{name: b["keys"] for name, b in batches.items()}}) + "\n")
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{total.item():.4f}")

        if step % config.logging.every_steps == 0 or step == config.steps:
            scalars = {"loss": total.item()}
            for name, out in losses.items():
                scalars.update({f"loss/{name}" if key == "loss" else f"loss/{name}/{key}": v.item() for key, v in out.items()})
            scalars = _mean_over_ranks(scalars)
            skipped = _summed_over_ranks(loader.skipped)
            elapsed = time.perf_counter() - window_start
            if log is not None:
                log.log({
                    "step": step,
                    **scalars,
                    **family.scalars(engine.module, state["phase"]),
                    "lr": lr_per_tower(optimizer),
                    "samples": dict(state["samples"]),
                    "samples_per_s": window_samples / elapsed,  # per rank
                    "mfu": window_flops / elapsed / peak if peak and window_flops is not None else None,
                    "skipped": skipped,
                })
            window_start, window_samples, window_flops = time.perf_counter(), 0, 0.0

        saved = step % config.checkpoint.every_steps == 0 or step == config.steps
        if saved:
            save()
        if step < config.steps and (stopped_by := stop.agreed(device)) is not None:
            if not saved:
                save()
            break

    if progress is not None:
        progress.close()
    if log is not None:
        log.close()
    if stopped_by is not None:
        raise Preempted(state["step"], ckpt.checkpoint_dir(output, state["step"]), stopped_by)
    return ckpt.checkpoint_dir(output, state["step"])
