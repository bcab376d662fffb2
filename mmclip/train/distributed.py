"""Process-group setup from torchrun or SLURM variables; a lone process needs neither."""

from __future__ import annotations

import contextlib
import io
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .ops import use_environment_build


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world_info() -> DistEnv:
    """Rank and world size from the launcher's environment, read before any work (configs check them)."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:  # torchrun
        return DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if "SLURM_PROCID" in env:  # srun, one task per accelerator
        return DistEnv(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)))
    return DistEnv(0, 1, 0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def init_distributed(env: DistEnv) -> torch.device:
    """Start the process group (nccl on CUDA, else gloo) and return this rank's device.

    SLURM variables are copied into the torchrun ones DeepSpeed reads; ``MASTER_ADDR`` must then be
    exported by the job script (the first host of ``SLURM_JOB_NODELIST``), as open_clip requires.
    """
    os.environ.update(RANK=str(env.rank), WORLD_SIZE=str(env.world_size), LOCAL_RANK=str(env.local_rank))
    if env.world_size == 1:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    else:
        os.environ.setdefault("MASTER_PORT", "29500")
    if torch.cuda.is_available():
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    use_environment_build()  # before DeepSpeed compiles its CPU op
    import deepspeed

    # On CPU DeepSpeed prints on stdout that it built its shared-memory op, at every start.
    quiet = contextlib.redirect_stdout(io.StringIO()) if device.type == "cpu" else contextlib.nullcontext()
    with quiet:
        deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo")
    return device


@contextlib.contextmanager
def distributed_session(env: DistEnv) -> Iterator[torch.device]:
    """:func:`init_distributed` for the block, then the launcher variables set for it are restored.

    The process group itself stays (DeepSpeed caches its groups, and a later in-process run, such
    as the demo's next stage, reuses it), but child processes must not inherit a port it holds.
    """
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    saved = {name: os.environ.get(name) for name in names}
    try:
        yield init_distributed(env)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
