"""`mmclip demo` end to end at a fraction of its steps: corpus, three chained stages, report."""

import argparse
import json

import pytest

from mmclip.demo import clip as demo

KEYS = sorted(f"{direction}_retrieval_recall@{k}" for direction in ("image", "text") for k in (1, 5, 10))


@pytest.mark.slow
def test_demo_runs_three_chained_stages_and_reports_retrieval(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    output = tmp_path / "demo"
    args = parser.parse_args(["--output", str(output), "--size", "tiny", "--workers", "1", "--scale", "0.02"])
    assert demo.run(args) == 0

    report = json.loads((output / "report.json").read_text())
    corpus = json.loads((output / "data" / "corpus.json").read_text())
    assert list(report["stages"]) == ["stage1", "stage2", "stage3"]
    # Each stage ends at its last resolution: stage 1 after its switch to 80 px, stage 2 after its
    # warm-up at 96, stage 3 at 96.
    assert [stage["image_size"] for stage in report["stages"].values()] == [80, 96, 96]
    for stage in report["stages"].values():
        assert sorted(stage["retrieval"]) == sorted(corpus["languages"])
        for metrics in stage["retrieval"].values():
            assert sorted(metrics) == KEYS
            assert all(0 <= value <= 1 for value in metrics.values())
    assert isinstance(report["target"]["met"], bool)
    # Stages chain: stage 2 starts from stage 1's final checkpoint, stage 3 from stage 2's.
    stage2 = (output / "runs" / "stage2" / "config.yaml").read_text()
    assert report["stages"]["stage1"]["checkpoint"] in stage2

    # The closing step: the exported model searches the held-out images in several languages.
    assert (output / "hf" / "config.json").is_file() and (output / "index" / "meta.json").is_file()
    assert sorted(report["search"]) == sorted(demo.SEARCH_LANGUAGES)
    assert all(0 <= r["top1"] <= r["queries"] == demo.SEARCH_QUERIES for r in report["search"].values())

    out = capsys.readouterr().out
    assert "stage3 (96 px): held-out retrieval" in out and "report:" in out
    assert out.count("\n        -> ") == len(demo.SEARCH_LANGUAGES) * demo.SEARCH_QUERIES


def test_refuses_a_non_empty_output(tmp_path):
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    (tmp_path / "file").write_text("")
    assert demo.run(parser.parse_args(["--output", str(tmp_path)])) == 1
