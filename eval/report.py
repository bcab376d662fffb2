"""Every benchmark at every Matryoshka dimension, as JSON, a markdown table and PNG plots; two
models side by side.

``evaluate_model(MODEL, EVAL_DIR, OUTPUT)`` reads the held-out sets under ``EVAL_DIR`` (the layout
``data_pipelines.synthetic`` writes, or the same layout for real data) and runs, at each dim:

* image <-> text retrieval per language: clip_benchmark's own CLI, dataset ``crossmodal3600``
  (every language of the set), recall@1/5/10 both ways (``clip_benchmark/``);
* STS (cosine Spearman) and text retrieval (nDCG@10) per language: mteb (``sts/``, ``text_retrieval/``);
* ViDoRe nDCG@5: mteb's ViDoRe task on the page set (``documents/``).

``MODEL`` is an ``mmclip export`` directory, or a training checkpoint (exported first, into
``OUTPUT/model``). Output: ``results.json``, ``report.md``, ``metric_vs_dim.png``,
``per_language.png``; :func:`compare` adds ``comparison.md`` / ``comparison.png`` for two results.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

RECALL_K = (1, 5, 10)
# Headline numbers of a result, in the order of the tables: (key, label).
HEADLINES = (
    ("t2i_recall@5", "text->image R@5"),
    ("i2t_recall@5", "image->text R@5"),
    ("sts_spearman", "STS Spearman"),
    ("text_ndcg@10", "text retrieval nDCG@10"),
    ("vidore_ndcg@5", "ViDoRe nDCG@5"),
)


@contextlib.contextmanager
def _working_directory(path: Path):
    previous = Path.cwd()
    os.chdir(path)  # clip_benchmark opens image_paths relative to the working directory
    try:
        yield
    finally:
        os.chdir(previous)


def exported(model: Path, output: Path) -> Path:
    """``model`` if it is an export, else its export into ``output/model`` (made once): the harnesses
    use the exported interface only."""
    from mmclip import checkpoint

    if checkpoint.is_checkpoint(model):
        from mmclip.export import export

        target = output / "model"
        if not (target / "config.json").is_file():
            export(model, target)
        return target
    return model


def clip_benchmark_retrieval(model_dir: Path, root: Path, dims: list[int], output: Path) -> dict:
    """``{dim: {lang: clip_benchmark metrics}}`` through clip_benchmark's CLI (one call, every dim and language)."""
    from .clip_benchmark import main
    from .retrieval import find_annotation_files

    files = find_annotation_files(root)
    languages = sorted(lang for lang, path in files.items() if path.name.startswith("crossmodal3600_captions-"))
    if not languages:
        raise FileNotFoundError(
            f"{root}: no crossmodal3600_captions-*.json annotation files"
        )  # xtd10 alone lacks hi, ar
    output.mkdir(parents=True, exist_ok=True)
    template = str(output.resolve() / "{model}_{language}.json")
    argv = [
        "eval", "--model_type", "mmclip", "--pretrained", str(model_dir.resolve()), "--model", *map(str, dims),
        "--dataset", "crossmodal3600", "--language", *languages, "--dataset_root", str(root.resolve()),
        "--recall_k", *map(str, RECALL_K), "--no_amp", "--num_workers", "0", "--quiet", "--output", template,
    ]  # fmt: skip
    with _working_directory(root):
        main(argv)
    return {
        dim: {lang: json.loads((output / f"{dim}_{lang}.json").read_text())["metrics"] for lang in languages}
        for dim in dims
    }


def evaluate_model(model: str | Path, eval_dir: str | Path, output: str | Path, dims: list[int] | None = None) -> dict:
    """Run every benchmark found under ``eval_dir`` at each dim; write and return the results."""
    from mmclip.search import load_model

    from .mteb_tasks import MMCLIPEncoder, local_sts, local_text_retrieval, run_tasks, vidore_task, write_vidore_dataset

    eval_dir, output = Path(eval_dir), Path(output)
    output.mkdir(parents=True, exist_ok=True)
    model_dir = exported(Path(model), output)
    hf_model = load_model(model_dir)
    dims = list(dims or hf_model.matryoshka_dims)
    for dim in dims:
        hf_model.check_truncate_dim(dim)
    full = hf_model.embed_dim

    results: dict = {"model": str(model), "dims": dims, "per_dim": {}}
    retrieval = {}
    if (eval_dir / "clip_benchmark").is_dir():
        retrieval = clip_benchmark_retrieval(model_dir, eval_dir / "clip_benchmark", dims, output / "clip_benchmark")
    tasks = []
    if (eval_dir / "sts").is_dir():
        tasks.append(local_sts(eval_dir / "sts"))
    if (eval_dir / "text_retrieval").is_dir():
        tasks.append(local_text_retrieval(eval_dir / "text_retrieval"))
    if (eval_dir / "documents").is_dir():
        tasks.append(vidore_task(write_vidore_dataset(eval_dir / "documents", output)))
    full_width: dict = {}  # every text and image encoded once, for all dims
    for dim in dims:
        encoder = MMCLIPEncoder(model_dir, None if dim == full else dim, model=hf_model, full_width=full_width)
        mteb_scores = run_tasks(encoder, tasks) if tasks else {}
        entry = {"retrieval": retrieval.get(dim, {}), "mteb": mteb_scores}
        entry["summary"] = _summary(entry)
        results["per_dim"][str(dim)] = entry
    (output / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (output / "report.md").write_text(markdown_report(results))
    plot_results(results, output)
    logger.info("evaluation of %s: %s", model, output / "report.md")
    return results


def _mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def _summary(entry: dict) -> dict[str, float | None]:
    retrieval, mteb_scores = entry["retrieval"], entry["mteb"]
    vidore = next((scores for name, scores in mteb_scores.items() if "ViDoRe" in name), {})
    return {
        "t2i_recall@5": _mean(m["image_retrieval_recall@5"] for m in retrieval.values()),
        "i2t_recall@5": _mean(m["text_retrieval_recall@5"] for m in retrieval.values()),
        "sts_spearman": _mean(mteb_scores.get("SyntheticSTS", {}).values()),
        "text_ndcg@10": _mean(mteb_scores.get("SyntheticTextRetrieval", {}).values()),
        "vidore_ndcg@5": _mean(vidore.values()),
    }


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def markdown_report(results: dict) -> str:
    full = str(results["dims"][-1])
    lines = [f"# Evaluation of `{results['model']}`", "", "## Every benchmark at each Matryoshka dimension", ""]
    lines.append("| dim | " + " | ".join(label for _, label in HEADLINES) + " |")
    lines.append("|---" * (len(HEADLINES) + 1) + "|")
    for dim, entry in results["per_dim"].items():
        lines.append(f"| {dim} | " + " | ".join(_cell(entry["summary"][key]) for key, _ in HEADLINES) + " |")
    entry = results["per_dim"][full]
    languages = sorted(
        set(entry["retrieval"]) | {lang for scores in entry["mteb"].values() for lang in scores} - {"default"}
    )
    if languages:
        lines += ["", f"## Per language at {full} dimensions", ""]
        lines.append("| language | t2i R@1 | t2i R@5 | i2t R@1 | i2t R@5 | STS | text nDCG@10 |")
        lines.append("|---|---|---|---|---|---|---|")
        for lang in languages:
            m = entry["retrieval"].get(lang, {})
            row = [m.get("image_retrieval_recall@1"), m.get("image_retrieval_recall@5"),
                   m.get("text_retrieval_recall@1"), m.get("text_retrieval_recall@5"),
                   entry["mteb"].get("SyntheticSTS", {}).get(lang),
                   entry["mteb"].get("SyntheticTextRetrieval", {}).get(lang)]  # fmt: skip
            lines.append(f"| {lang} | " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def plot_results(results: dict, output: Path) -> None:
    """``metric_vs_dim.png`` (each headline number against the dimension) and ``per_language.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = [int(d) for d in results["per_dim"]]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, label in HEADLINES:
        values = [results["per_dim"][str(d)]["summary"][key] for d in dims]
        if all(v is not None for v in values):
            ax.plot(dims, values, marker="o", label=label)
    ax.set(xscale="log", xlabel="embedding dimension (Matryoshka prefix)", ylabel="score", title="Score vs dimension")
    ax.set_xticks(dims, [str(d) for d in dims])
    ax.minorticks_off()
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(output / "metric_vs_dim.png", dpi=100)
    plt.close(fig)

    entry = results["per_dim"][str(dims[-1])]
    series = {"text->image R@5": {k: m["image_retrieval_recall@5"] for k, m in entry["retrieval"].items()},
              "image->text R@5": {k: m["text_retrieval_recall@5"] for k, m in entry["retrieval"].items()},
              "STS": entry["mteb"].get("SyntheticSTS", {}),
              "text nDCG@10": entry["mteb"].get("SyntheticTextRetrieval", {})}  # fmt: skip
    _bars(
        {name: values for name, values in series.items() if values},
        f"Per language at {dims[-1]} dimensions",
        output / "per_language.png",
    )


def _bars(series: dict[str, dict[str, float]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({key for values in series.values() for key in values})
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(6, len(groups) * 0.9), 4.5))
    for i, (name, values) in enumerate(series.items()):
        ax.bar([g + i * width for g in range(len(groups))], [values.get(key, 0.0) for key in groups], width, label=name)
    ax.set_xticks([g + width * (len(series) - 1) / 2 for g in range(len(groups))], groups)
    ax.set(ylabel="score", title=title, ylim=(0, 1))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def compare(a: dict, b: dict, output: str | Path, names: tuple[str, str] = ("A", "B")) -> str:
    """Side by side at every dim both share: ``comparison.md`` and ``comparison.png`` (full width)."""
    output = Path(output)
    dims = [d for d in a["per_dim"] if d in b["per_dim"]]
    if not dims:
        raise ValueError("the two results share no dimension")
    lines = [f"# {names[0]} vs {names[1]}", "", f"{names[0]}: `{a['model']}`  ", f"{names[1]}: `{b['model']}`", ""]
    lines.append("| dim | metric | " + f"{names[0]} | {names[1]} | difference |")
    lines.append("|---|---|---|---|---|")
    for dim in dims:
        for key, label in HEADLINES:
            x, y = a["per_dim"][dim]["summary"][key], b["per_dim"][dim]["summary"][key]
            if x is None and y is None:
                continue
            diff = "-" if x is None or y is None else f"{y - x:+.3f}"
            lines.append(f"| {dim} | {label} | {_cell(x)} | {_cell(y)} | {diff} |")
    text = "\n".join(lines) + "\n"
    (output / "comparison.md").write_text(text)
    full = dims[-1]
    series = {
        name: {label: result["per_dim"][full]["summary"][key] or 0.0 for key, label in HEADLINES}
        for name, result in zip(names, (a, b))
    }
    _bars(series, f"{names[0]} vs {names[1]} at {full} dimensions", output / "comparison.png")
    return text


@contextlib.contextmanager
def progress_bars(enabled: bool):
    """The progress bars of datasets (``Map:``, ``Generating test split``, ...), transformers
    (``Loading weights``), the Hub and plain tqdm (clip_benchmark's per-batch bar, which no
    argument turns off) on or off for the block; mteb's are off by argument. Each library's
    previous setting is restored after."""
    import datasets
    import huggingface_hub.utils as hub
    import tqdm
    from transformers.utils import logging as transformers_logging

    tqdm_init = tqdm.tqdm.__init__
    if not enabled:  # a caller's own disable= still wins
        tqdm.tqdm.__init__ = functools.partialmethod(tqdm_init, disable=True)

    switches = [  # (was on, turn on, turn off)
        (not datasets.are_progress_bars_disabled(), datasets.enable_progress_bars, datasets.disable_progress_bars),
        (transformers_logging.is_progress_bar_enabled(), transformers_logging.enable_progress_bar,
         transformers_logging.disable_progress_bar),
        (not hub.are_progress_bars_disabled(), hub.enable_progress_bars, hub.disable_progress_bars),
    ]
    for _, turn_on, turn_off in switches:
        (turn_on if enabled else turn_off)()
    try:
        yield
    finally:
        tqdm.tqdm.__init__ = tqdm_init
        for was_on, turn_on, turn_off in switches:
            (turn_on if was_on else turn_off)()


def run_evaluation(
    model: str | Path, eval_dir: str | Path, output: str | Path, *, compare_with: str | Path | None = None, dims=None,
    verbose: bool = False,
) -> dict:
    """The demo's closing step: evaluate ``model``; with ``compare_with`` (the ``results.json`` of an
    earlier evaluation, e.g. stage 2's) also write ``comparison.md`` / ``.png`` against it.
    Third-party progress bars only with ``verbose``."""
    with progress_bars(verbose):
        results = evaluate_model(model, eval_dir, output, dims)
    if compare_with is not None:
        compare(json.loads(Path(compare_with).read_text()), results, output)
    return results
