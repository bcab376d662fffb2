"""The same seed gives the same numbers on the same machine: the synthetic corpus and its tokenizer
byte for byte, and a training run's losses and weights."""

import os
import subprocess
import sys

import pytest

from .conftest import REPO
from .test_train import read_log, run_train, stage_config, weights, workspace  # noqa: F401 (workspace: a fixture)


def files(directory):
    return {path.relative_to(directory): path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file()}


@pytest.mark.slow
def test_corpus_and_tokenizer_are_the_same_on_every_run(tmp_path):
    """Each run is a new process: the tokenizer trainer's hash maps are seeded anew in each."""
    for name in ("a", "b"):
        command = [sys.executable, "-m", "data_pipelines", "synthetic", "--output", str(tmp_path / name), "--size", "200",
                   "--workers", "1"]
        result = subprocess.run(command, cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
    first, second = files(tmp_path / "a"), files(tmp_path / "b")
    assert any(path.parts[0] == "tokenizer" for path in first) and any(path.suffix == ".tar" for path in first)
    assert first.keys() == second.keys()
    assert [path for path in first if first[path] != second[path]] == []


@pytest.mark.slow
def test_two_identical_training_runs_give_identical_losses(workspace, tmp_path):  # noqa: F811
    config = stage_config(workspace, "repeat", steps=3, **{"checkpoint.every_steps": 3, "logging.tensorboard": False})
    for name in ("a", "b"):
        run_train(config, tmp_path / name)
    losses = [[(r["loss"], r["loss/image_text"], r["loss/text_pair"]) for r in read_log(tmp_path / name)] for name in "ab"]
    assert len(losses[0]) == 3 and losses[0] == losses[1]
    first, second = weights(tmp_path / "a", 3), weights(tmp_path / "b", 3)
    assert all((first[key] == second[key]).all() for key in first)
