"""What every benchmark here ends with: its JSON report on stdout, and in ``--output`` if given;
and the name of the processor it ran on."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (``platform.processor()`` is empty on Linux; /proc/cpuinfo names the part)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def processor() -> str:
    """E.g. ``AMD EPYC (2 cores)``: CPU timings differ by model (the same training step ran 1.15x
    open_clip's on one 2-core VM and 1.0x on another), so every CPU record names it."""
    return f"{cpu_model()} ({os.cpu_count()} cores)"


def describe_device(device) -> str:
    """A record's ``device``: the GPU's name, or ``cpu (`` :func:`processor` ``)``."""
    if device.type == "cuda":
        import torch  # only here: the CPU-only benchmarks need no torch for their reports

        return torch.cuda.get_device_name(device)
    return f"cpu ({processor()})"


def emit(report: dict, output: Path | None) -> None:
    text = json.dumps(report, indent=2)
    print(text)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text + "\n")
