"""What a training run shows on rank 0: a step line every ``logging.every_steps``, and a bar on a terminal.

The step line goes to stdout whether or not it is a terminal (nohup, CI, a SLURM ``%x-%j.out``
file)::

    step 40/100 | loss 3.1416 | text_pair 1.5120 image_text 1.6296 | lr vision 2.0e-04 text 1.0e-04 \
logit_scale 2.0e-04 | 812.3 samples/s/rank | eta 0:01:12 | mfu 31.4% | skipped 0

On a terminal a tqdm bar (steps, ETA, loss, samples/s) sits below, and both the step lines and
every log record are written through tqdm, so they appear above the bar instead of breaking it.
"""

from __future__ import annotations

import contextlib
import datetime
import sys
import time
from typing import Any


def format_step(record: dict[str, Any], total: int, eta_s: float | None) -> str:
    """The step line of a ``log.jsonl`` record (see :mod:`.loop`)."""
    parts = [f"step {record['step']}/{total}", f"loss {record['loss']:.4f}"]
    streams = {key[5:]: value for key, value in record.items() if key.startswith("loss/") and key.count("/") == 1}
    if streams:
        parts.append(" ".join(f"{name} {value:.4f}" for name, value in streams.items()))
    if record.get("lr"):
        parts.append("lr " + " ".join(f"{tower} {lr:.1e}" for tower, lr in record["lr"].items()))
    parts.append(f"{record['samples_per_s']:.1f} samples/s/rank")
    if eta_s is not None:
        parts.append(f"eta {datetime.timedelta(seconds=round(eta_s))}")
    if record.get("mfu") is not None:
        parts.append(f"mfu {100 * record['mfu']:.1f}%")
    skipped = [(f"{name} {reason}", n) for name, reasons in record["skipped"].items() for reason, n in reasons.items()]
    detail = ", ".join(f"{what} {n}" for what, n in skipped)
    parts.append(f"skipped {sum(n for _, n in skipped)}" + (f" ({detail})" if detail else ""))
    return " | ".join(parts)


def format_validation(step: int, results: dict[str, dict[str, float]]) -> str:
    sets = " | ".join(f"{name} " + " ".join(f"{metric} {value:.3f}" for metric, value in metrics.items())
                      for name, metrics in results.items())
    return f"validation step {step} | {sets}"


class Progress:
    """Rank 0's step lines and (on a terminal) bar; :meth:`close` at the end of the run."""

    def __init__(self, total: int, start_step: int):
        self.total, self.start_step, self.start_time = total, start_step, time.perf_counter()
        self.bar = None
        self._stack = contextlib.ExitStack()
        if sys.stderr.isatty():
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self.bar = self._stack.enter_context(
                tqdm(total=total, initial=start_step, unit="step", dynamic_ncols=True)
            )
            self._stack.enter_context(logging_redirect_tqdm())  # log records above the bar

    def close(self) -> None:
        self._stack.close()

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def log(self, record: dict[str, Any]) -> None:
        """The step line of a logged record (and the bar's loss and throughput)."""
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{record['loss']:.4f}", samples_s=f"{record['samples_per_s']:.1f}")
        self.write(format_step(record, self.total, self._eta(record["step"])))

    def validation(self, step: int, results: dict[str, dict[str, float]]) -> None:
        self.write(format_validation(step, results))

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=sys.stdout)
        else:
            print(line, flush=True)

    def _eta(self, step: int) -> float | None:
        done = step - self.start_step
        if done <= 0:
            return None
        return (time.perf_counter() - self.start_time) / done * (self.total - step)
