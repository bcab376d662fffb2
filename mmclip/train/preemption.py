"""Preemption: SIGTERM or SIGUSR1 -> a checkpoint at the next step boundary -> exit ``EXIT_PREEMPTED``.

A cluster warns a job before it ends it: SLURM sends ``--signal=USR1@SECONDS`` before the time
limit, and SIGTERM on preemption, ``scancel`` or ``scontrol requeue`` (then SIGKILL after
``KillWait``, 30 s by default). The handler only records the signal; after each optimizer step the
ranks all-reduce the record, so a rank signalled a moment later still stops at the same step (a
rank that went on alone would hang the others in the next collective). Then every rank saves the
checkpoint of that step and :func:`mmclip.train.train` raises :class:`Preempted`, which ``mmclip
train`` turns into exit status ``EXIT_PREEMPTED``. ``slurm/launch.sh`` requeues the job on that
status, and the requeued job continues with ``--resume auto`` from exactly that step.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

EXIT_PREEMPTED = 75  # EX_TEMPFAIL of sysexits.h: "try again later"
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(Exception):
    """Training stopped on a signal after saving ``checkpoint``; rerun with ``--resume auto``."""

    def __init__(self, step: int, checkpoint: Path, signal_name: str):
        super().__init__(f"{signal_name}: stopped after step {step}, checkpoint {checkpoint}")
        self.step, self.checkpoint = step, checkpoint


class StopRequest:
    """The first of ``SIGNALS`` received since :func:`watch_signals` started, if any."""

    def __init__(self) -> None:
        self.signal: signal.Signals | None = None

    def _handle(self, signum: int, _frame) -> None:
        if self.signal is None:
            self.signal = signal.Signals(signum)
            logger.warning("%s received: checkpointing at the end of this step", self.signal.name)

    def agreed(self, device: torch.device) -> str | None:
        """The signal's name if any rank received one (collective: every rank calls it at every step)."""
        received = torch.tensor([0 if self.signal is None else int(self.signal)], device=device)
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(received, op=dist.ReduceOp.MAX)
        value = int(received.item())
        return signal.Signals(value).name if value else None


@contextmanager
def watch_signals() -> Iterator[StopRequest]:
    """Record ``SIGNALS`` instead of dying on them, for the block; the old handlers come back after.

    DataLoader workers forked inside the block inherit the handler, so SLURM's signal to every
    process of the step does not kill them before the main process checkpoints.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():  # Python delivers signals there only
        yield request
        return
    previous = {sig: signal.signal(sig, request._handle) for sig in SIGNALS}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
