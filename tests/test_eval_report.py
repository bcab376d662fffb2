"""`mmclip eval report` / `compare`: clip_benchmark, mteb STS / text retrieval and mteb's ViDoRe task at
every Matryoshka dim, offline on held-out sets in the synthetic corpus's layout; two results side by side."""

import json

import numpy as np
import pytest
from PIL import Image

from data_pipelines.synthetic.eval_sets import write_eval_sets
from data_pipelines.synthetic.samples import Context
from mmclip.cli import main
from mmclip.search import load_model

from .test_export import make_checkpoint

LANGUAGES = ("de", "hi")
SIZES = {"images": 10, "documents": 3, "sts": 12, "text_retrieval": 6}


def checkpoint_and_eval_sets(root):
    """A training checkpoint and the held-out sets in ``root/eval`` (two languages, a few items each)."""
    checkpoint, _ = make_checkpoint(root)
    write_eval_sets(root / "eval", Context(3, LANGUAGES), SIZES, lambda build, count: map(build, range(count)))
    return checkpoint


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    return root, checkpoint_and_eval_sets(root)


def test_report_runs_every_benchmark_at_each_dim_and_compares_results(setup, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    root, checkpoint = setup
    argv = [
        "eval",
        "report",
        str(checkpoint),
        "--data",
        str(root / "eval"),
        "--output",
        str(tmp_path / "out"),
        "--dims",
        "16",
        "64",
    ]
    assert main(argv) == 0
    # Quiet without --verbose: none of the datasets / transformers / clip_benchmark (tqdm: "it/s]")
    # progress bars around the scores.
    shown = capfd.readouterr()
    for bar in ("Standardizing text corpus format", "Generating test split", "Map:", "Loading weights", "it/s]"):
        assert bar not in shown.err + shown.out, bar

    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["dims"] == [16, 64]
    for dim in ("16", "64"):
        entry = results["per_dim"][dim]
        assert sorted(entry["retrieval"]) == sorted(LANGUAGES)  # crossmodal3600 knows hi
        assert sorted(entry["mteb"]) == ["SyntheticDocumentsViDoRe", "SyntheticSTS", "SyntheticTextRetrieval"]
        assert sorted(entry["mteb"]["SyntheticSTS"]) == sorted(LANGUAGES)
        assert all(value is not None and -1 <= value <= 1 for value in entry["summary"].values())

    # The STS score is mteb's cosine Spearman of this model: recompute it for one language.
    from scipy.stats import spearmanr

    model = load_model(tmp_path / "out" / "model")
    rows = [json.loads(line) for line in (root / "eval" / "sts" / "de.jsonl").read_text().splitlines()]
    a = model.encode_text([r["sentence1"] for r in rows], truncate_dim=16)
    b = model.encode_text([r["sentence2"] for r in rows], truncate_dim=16)
    expected = spearmanr((a * b).sum(1), [r["score"] for r in rows]).statistic
    assert results["per_dim"]["16"]["mteb"]["SyntheticSTS"]["de"] == pytest.approx(expected, abs=1e-4)

    # An evaluation against itself: every difference is zero; the report and plots exist.
    results_file = str(tmp_path / "out" / "results.json")
    assert main(["eval", "compare", results_file, results_file, "--output", str(tmp_path / "out")]) == 0
    comparison = (tmp_path / "out" / "comparison.md").read_text()
    assert "| 64 | ViDoRe nDCG@5 |" in comparison and "+0.000" in comparison
    assert all(row.endswith("| +0.000 |") for row in comparison.splitlines() if row.startswith(("| 16 ", "| 64 ")))
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| 16 |" in report and "| hi |" in report
    for name in ("metric_vs_dim.png", "per_language.png", "comparison.png"):
        image = np.asarray(Image.open(tmp_path / "out" / name).convert("L"))
        assert image.shape[0] > 200 and image.std() > 10  # a drawn plot, not an empty canvas


def test_two_document_sets_are_read_as_their_own_pages(tmp_path, monkeypatch):
    # datasets caches a local folder's dataset by the folder's name: a second report read the
    # pages of the first one's set (ViDoRe nDCG@5 0.605 instead of 0.010 on the demo model).
    import datasets.config

    from eval.mteb_tasks import vidore_task, write_vidore_dataset

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets_cache")  # one cache for both
    for name, pages in (("first", 3), ("second", 5)):
        root = tmp_path / name
        write_eval_sets(root, Context(3, ("de",)), {**SIZES, "documents": pages}, lambda build, n: map(build, range(n)))
        task = vidore_task(write_vidore_dataset(root / "documents", tmp_path / name / "work"))
        task.load_data()
        queries = len((root / "documents" / "queries.jsonl").read_text().splitlines())
        assert (len(task.corpus["test"]), len(task.queries["test"])) == (pages, queries)
