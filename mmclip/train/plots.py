"""``plots/`` of a run directory, drawn from its ``log.jsonl`` at the end of the run (matplotlib, Agg).

* ``loss.png``: the total loss and each stream's over steps;
* ``validation.png``: each validation metric over steps, one panel per held-out set (when the
  stage has ``validation:``).
"""

from __future__ import annotations

import json
from pathlib import Path


def write_plots(output: Path) -> list[Path]:
    """The PNGs written into ``output/plots`` (none when the log is empty)."""
    records = _last_per_step(output / "log.jsonl")
    losses = [r for r in records if "loss" in r]
    validations = [r for r in records if "val" in r]
    if not losses and not validations:
        return []
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed (nohup, SLURM)
    from matplotlib import pyplot as plt

    directory = output / "plots"
    directory.mkdir(exist_ok=True)
    written = []
    if losses:
        figure, axis = plt.subplots(figsize=(8, 4.5))
        steps = [r["step"] for r in losses]
        axis.plot(steps, [r["loss"] for r in losses], label="total", color="black", linewidth=1.5)
        for key in sorted({k for r in losses for k in r if k.startswith("loss/") and k.count("/") == 1}):
            points = [(r["step"], r[key]) for r in losses if key in r]
            axis.plot(*zip(*points), label=key[5:], linewidth=1)
        axis.set(xlabel="step", ylabel="loss", title=f"{output.name}: training loss")
        axis.grid(alpha=0.3)
        axis.legend()
        written.append(_save(figure, directory / "loss.png"))
    if validations:
        sets = sorted({name for r in validations for name in r["val"]})
        figure, axes = plt.subplots(1, len(sets), figsize=(6 * len(sets), 4.5), squeeze=False)
        for axis, name in zip(axes[0], sets):
            points = [(r["step"], r["val"][name]) for r in validations if name in r["val"]]
            for metric in points[0][1]:
                axis.plot([s for s, _ in points], [m[metric] for _, m in points], marker="o", label=metric)
            axis.set(xlabel="step", ylabel="score", ylim=(0, 1.02), title=f"validation: {name}")
            axis.grid(alpha=0.3)
            axis.legend(fontsize="small")
        written.append(_save(figure, directory / "validation.png"))
    return written


def _last_per_step(path: Path) -> list[dict]:
    """Loss and validation records in step order; a resumed run's repeated steps keep the last record."""
    if not path.is_file():
        return []
    records: dict[tuple[int, bool], dict] = {}
    for line in path.read_text().splitlines():
        if line:
            record = json.loads(line)
            records[record["step"], "val" in record] = record
    return [records[key] for key in sorted(records)]


def _save(figure, path: Path) -> Path:
    from matplotlib import pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
