"""`mmclip eval clip-benchmark`: clip_benchmark's own CLI and metrics, model type mmclip, offline on the
synthetic XTD10 / Crossmodal-3600 layout, at full width and at a Matryoshka prefix."""

import json

import numpy as np
import pytest

from data_pipelines.synthetic.eval_sets import eval_image, write_clip_benchmark
from data_pipelines.synthetic.languages import LANGUAGES
from data_pipelines.synthetic.samples import Context
from mmclip.cli import main
from mmclip.export import export
from mmclip.search import load_model

from .test_export import make_checkpoint

IMAGES = 12


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip_benchmark")
    checkpoint, _ = make_checkpoint(root)
    export(checkpoint, root / "hf")
    ctx = Context(7, LANGUAGES)
    write_clip_benchmark(root / "data", ctx, (eval_image(ctx, i) for i in range(IMAGES)))
    return root, checkpoint


def recall_bounds(similarity: np.ndarray, k: int, eps: float = 1e-5) -> tuple[float, float]:
    """Row i's match is column i: the share of rows whose match is among their k best, counting
    scores within ``eps`` of the match as ties that may fall either way (the untrained model's
    embeddings are close, and batching changes the last float bits)."""
    diagonal = np.diag(similarity)[:, None]
    surely_above, maybe_above = (similarity > diagonal + eps).sum(1), (similarity > diagonal - eps).sum(1) - 1
    return float((maybe_above < k).mean()), float((surely_above < k).mean())


def test_xtd10_through_clip_benchmarks_own_cli_at_each_dimension(benchmark, tmp_path, monkeypatch):
    root, _ = benchmark
    monkeypatch.chdir(root / "data")  # clip_benchmark opens image_paths relative to the working directory
    argv = [
        "eval", "--model_type", "mmclip", "--pretrained", str(root / "hf"), "--model", "full", "16",
        "--dataset", "xtd10", "--language", "de", "zh", "jp", "--dataset_root", str(root / "data"),
        "--recall_k", "1", "5", "10", "--no_amp", "--batch_size", "5", "--num_workers", "0",
        "--output", str(tmp_path / "{dataset}_{model}_{language}.json"),
    ]  # fmt: skip
    # The run's model (loaded once per run): each image through the vision tower once, not per
    # language and width (3 x 2 here).
    from eval.clip_benchmark import _load_export

    encoded = []
    tower = _load_export(str((root / "hf").resolve()), False).clip.vision
    hook = tower.register_forward_hook(lambda module, args, output: encoded.append(len(args[0])))
    try:
        assert main(["eval", "clip-benchmark", *argv]) == 0
    finally:
        hook.remove()
    assert sum(encoded) == IMAGES

    model = load_model(root / "hf")
    data = json.loads((root / "data" / "xtd10-de.json").read_text())
    images = model.encode_image([str(root / "data" / path) for path in data["image_paths"]])
    for language in ("de", "zh", "jp"):
        captions = json.loads((root / "data" / f"xtd10-{language}.json").read_text())["annotations"]
        for name, dim in (("full", None), ("16", 16)):
            result = json.loads((tmp_path / f"xtd10_{name}_{language}.json").read_text())
            assert result["task"] == "zeroshot_retrieval" and result["model"] == name
            assert result["language"] == language
            texts = model.encode_text(captions, truncate_dim=dim)
            similarity = (
                texts
                @ (
                    images
                    if dim is None
                    else model.encode_image([str(root / "data" / p) for p in data["image_paths"]], truncate_dim=dim)
                ).T
            )
            for k in (1, 5, 10):
                low, high = recall_bounds(similarity, k)
                assert low - 1e-6 <= result["metrics"][f"image_retrieval_recall@{k}"] <= high + 1e-6
                low, high = recall_bounds(similarity.T, k)
                assert low - 1e-6 <= result["metrics"][f"text_retrieval_recall@{k}"] <= high + 1e-6


def test_a_training_checkpoint_runs_on_crossmodal3600_in_hindi_and_arabic(benchmark, tmp_path, monkeypatch):
    root, checkpoint = benchmark
    monkeypatch.chdir(root / "data")
    argv = [
        "eval", "--model_type", "mmclip", "--pretrained", str(checkpoint), "--model", "32",
        "--dataset", "crossmodal3600", "--language", "hi", "ar", "--dataset_root", str(root / "data"),
        "--recall_k", "1", "5", "--no_amp", "--num_workers", "0", "--output", str(tmp_path / "{language}.json"),
    ]  # fmt: skip
    assert main(["eval", "clip-benchmark", *argv]) == 0
    for language in ("hi", "ar"):
        metrics = json.loads((tmp_path / f"{language}.json").read_text())["metrics"]
        assert sorted(metrics) == sorted(f"{d}_retrieval_recall@{k}" for d in ("image", "text") for k in (1, 5))
        assert 0.0 <= metrics["image_retrieval_recall@1"] <= metrics["image_retrieval_recall@5"] <= 1.0


def test_an_unconfigured_dimension_is_refused(benchmark, tmp_path, monkeypatch):
    root, _ = benchmark
    monkeypatch.chdir(root / "data")
    argv = [
        "eval",
        "--model_type",
        "mmclip",
        "--pretrained",
        str(root / "hf"),
        "--model",
        "48",
        "--dataset",
        "xtd10",
        "--language",
        "en",
        "--dataset_root",
        str(root / "data"),
        "--no_amp",
        "--output",
        str(tmp_path / "x.json"),
    ]
    with pytest.raises(ValueError, match=r"--model 48: not one of the Matryoshka dims \[16, 32, 64\]"):
        main(["eval", "clip-benchmark", *argv])
