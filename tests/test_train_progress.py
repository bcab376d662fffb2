"""What a training run shows: step lines on a non-terminal stdout, validation on held-out shard sets
in log.jsonl and TensorBoard, plots/ at the end, a Weights & Biases run in offline mode, no
CPU-only warnings; the validation metrics against scikit-learn's."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from mmclip.data.formats import TextPair
from mmclip.data.shards import ShardSetWriter
from mmclip.train.validation import positive_ranks, ranking_metrics

from .conftest import REPO
from .test_loader import caption
from .test_train import stage_config, train_command, write_corpus, write_uniform_images

VAL_SIZE = 8  # below recall@10's k: recall@10 is 1 when every candidate is ranked


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("progress")
    write_corpus(root)
    write_uniform_images(root / "val_images", VAL_SIZE, shard_size=4)
    with ShardSetWriter(root / "val_pairs", "text_pair", max_samples=4) as writer:
        for i in range(VAL_SIZE):
            writer.write(TextPair(f"val{i:04d}", caption(100 + i), caption(101 + i)))
    validation = {
        "every_steps": 3,
        "sets": {
            "images": {"kind": "image_text", "shards": [str(root / "val_images")], "batch_size": 3},
            "pairs": {"kind": "text_pair", "shards": [str(root / "val_pairs")], "batch_size": 5},
        },
    }
    config = stage_config(
        root, "progress", steps=7, validation=validation,
        **{"logging.every_steps": 2, "logging.wandb": True, "logging.wandb_project": "mmclip-test"},
    )
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env |= {"OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    output = root / "run"
    result = subprocess.run(  # pipes: neither stdout nor stderr is a terminal
        train_command(config, output), cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return output, result


def test_a_non_terminal_run_prints_a_line_every_logging_step(run):
    _, result = run
    lines = [line for line in result.stdout.splitlines() if line.startswith("step ")]
    assert [line.split(" | ")[0] for line in lines] == ["step 2/7", "step 4/7", "step 6/7", "step 7/7"]
    fields = lines[0].split(" | ")
    assert fields[1].startswith("loss ") and fields[2].startswith("image_text ") and " text_pair " in fields[2]
    assert fields[3].startswith("lr vision ") and " text " in fields[3] and " logit_scale " in fields[3]
    assert fields[4].endswith(" samples/s/rank") and float(fields[4].split()[0]) > 0
    assert fields[5].startswith("eta 0:") and fields[-1] == "skipped 0"
    assert "mfu" not in lines[0]  # no known peak on CPU
    assert lines[-1].split(" | ")[5] == "eta 0:00:00"
    assert "\r" not in result.stdout  # no progress bar outside a terminal
    for warning in ("Setting accelerator to CPU", "No CUDA runtime is found"):
        assert warning not in result.stderr


def test_validation_metrics_in_the_log_and_tensorboard(run):
    output, result = run
    records = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
    validations = [r for r in records if "val" in r]
    assert [r["step"] for r in validations] == [3, 6, 7]  # every 3 steps and the last
    assert [r["step"] for r in records if "loss" in r] == [2, 4, 6, 7]
    for record in validations:
        images, pairs = record["val"]["images"], record["val"]["pairs"]
        assert sorted(images) == sorted(f"{d}_recall@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10))
        assert sorted(pairs) == ["ndcg@10", "recall@1", "recall@10", "recall@5"]
        for metrics in (images, pairs):
            assert all(0 <= v <= 1 for v in metrics.values())
        assert images["i2t_recall@1"] <= images["i2t_recall@5"] <= images["i2t_recall@10"] == 1.0
        assert pairs["recall@1"] <= pairs["ndcg@10"] <= pairs["recall@10"] == 1.0
    assert any(line.startswith("validation step 3 | images i2t_recall@1 ") for line in result.stdout.splitlines())

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(output / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"val/images/t2i_recall@5", "val/pairs/ndcg@10", "loss/text_pair"} <= set(scalars)
    logged = [(e.step, e.value) for e in events.Scalars("val/pairs/ndcg@10")]
    assert logged == [(r["step"], pytest.approx(r["val"]["pairs"]["ndcg@10"])) for r in validations]


def test_plots_of_the_losses_and_validation(run):
    output, _ = run
    assert sorted(p.name for p in (output / "plots").iterdir()) == ["loss.png", "validation.png"]
    for name in ("loss.png", "validation.png"):
        image = np.asarray(Image.open(output / "plots" / name).convert("L"))
        assert image.shape[0] >= 300 and image.std() > 10  # a drawn plot, not an empty canvas


def test_wandb_offline_run_files(run):
    output, _ = run
    (run_dir,) = (output / "wandb").glob("offline-run-*")
    (data,) = run_dir.glob("run-*.wandb")
    records = data.read_bytes()  # W&B's record stream: the run's project and the logged keys, as written
    for name in (b"mmclip-test", b"loss/text_pair", b"val/pairs/ndcg@10", b"lr/vision"):
        assert name in records, name


def test_validation_metrics_agree_with_scikit_learn():
    from sklearn.metrics import ndcg_score, top_k_accuracy_score

    torch.manual_seed(0)
    scores = torch.randn(20, 30)  # 20 queries, 30 candidates; query i's positive is candidate i
    ours = ranking_metrics(positive_ranks(scores), [1, 5], 10)
    labels = np.arange(20)
    assert ours["recall@1"] == pytest.approx(top_k_accuracy_score(labels, scores.numpy(), k=1, labels=np.arange(30)))
    assert ours["recall@5"] == pytest.approx(top_k_accuracy_score(labels, scores.numpy(), k=5, labels=np.arange(30)))
    relevance = np.eye(20, 30)
    assert ours["ndcg@10"] == pytest.approx(ndcg_score(relevance, scores.numpy(), k=10))


def test_on_a_terminal_a_bar_with_the_lines_printed_above_it(tmp_path):
    import fcntl
    import re
    import struct
    import termios

    write_corpus(tmp_path)
    config = stage_config(tmp_path, "tty", steps=4, **{"logging.every_steps": 2, "checkpoint.every_steps": 2})
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    controller, terminal = os.openpty()  # stdout and stderr are one terminal, as in an interactive shell
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # 40 rows, 160 columns
    process = subprocess.Popen(train_command(config, tmp_path / "run"), cwd=REPO, env=env,
                               stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal)
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    assert process.wait(timeout=300) == 0
    shown = b"".join(chunks).decode(errors="replace")
    assert re.search(r"\d/4 \[\d\d:\d\d<\d\d:\d\d, .*loss=[\d.]+, samples_s=[\d.]+\]", shown)  # steps, ETA, speed
    # What the terminal shows of each line: the text after its last carriage return (the bar erased).
    # (The terminal ends lines with \r\n.)
    visible = [line.rstrip("\r").rsplit("\r", 1)[-1] for line in shown.split("\n")]
    assert [line.split(" | ")[0] for line in visible if line.startswith("step ")] == ["step 2/4", "step 4/4"]
    assert len([line for line in visible if line.startswith("INFO mmclip.train.run_checkpoint: saved checkpoint")]) == 2
