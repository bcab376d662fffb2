"""`mmclip train` end to end on the tiny model: logs and checkpoints, 2 ranks == 1 rank, kill -9 and
resume == uninterrupted, SIGUSR1 / SIGTERM checkpoint and resume == uninterrupted (1 rank, and 2
GradCache ranks), the stage 1 -> 2 -> 3 chain, and config errors before any work."""

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from mmclip import ConfigError
from mmclip.data.formats import ImageText, TextPair
from mmclip.data.shards import ShardSetWriter
from data_pipelines.synthetic.tokenizer import train_tokenizer
from mmclip.train import load_train_config
from mmclip.train.optim import adamw
from mmclip.train.preemption import EXIT_PREEMPTED

from .conftest import REPO, TINY
from .test_loader import SENTENCES, caption, write_triplets

VENV_BIN = os.path.dirname(sys.executable)


def write_uniform_images(directory, n, shard_size):
    """One flat colour per image: every random crop gives the same pixels, whichever rank draws it."""
    rng = np.random.default_rng(0)
    with ShardSetWriter(directory, "image_text", max_samples=shard_size) as writer:
        for i in range(n):
            out = io.BytesIO()
            Image.new("RGB", (64, 64), tuple(int(c) for c in rng.integers(0, 256, 3))).save(out, "PNG")
            writer.write(ImageText(f"img{i:04d}", out.getvalue(), "png", caption(i), width=64, height=64))


def write_corpus(root):
    """A tokenizer and 48 image-text and 48 text-pair samples (keys img0000..., pair0000...)."""
    train_tokenizer(SENTENCES * 10, vocab_size=300, output_dir=root / "tokenizer")
    # Shards as large as a rank's batch: one rank of two reads shards 0, 2, 4, ..., the other 1, 3, 5, ...,
    # and one rank alone reads 0, 1, 2, ...: the same global batches in the same order.
    write_uniform_images(root / "image_text", 48, shard_size=2)
    with ShardSetWriter(root / "text_pair", "text_pair", max_samples=2) as writer:
        for i in range(48):
            writer.write(TextPair(f"pair{i:04d}", caption(i), caption(i + 1)))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    write_corpus(root)
    write_triplets(root / "text_triplet", 24, max_samples=2)
    return root


def stage_config(root, name, **extra):
    config = {
        "model": str(TINY),
        "model_overrides": [f"text.tokenizer={root / 'tokenizer'}"],
        "steps": 20,
        "data": {
            "image_size": 56,
            "context_length": 16,
            "num_workers": 0,
            "shuffle_block": 1,
            "interleave": 1,
            "streams": {
                "text_pair": {"kind": "text_pair", "shards": [str(root / "text_pair")], "batch_size": 4},
                "image_text": {"kind": "image_text", "shards": [str(root / "image_text")], "batch_size": 4},
            },
        },
        "optimizer": {"lr_vision": 1e-3, "lr_text": 1e-3, "warmup_steps": 2, "layer_decay_vision": 0.9},
        "precision": "fp32",
        "zero_stage": 1,
        "checkpoint": {"every_steps": 5, "keep_last": 10},
        "logging": {"every_steps": 1, "tensorboard": True, "sample_keys": True},
    }
    for key, value in extra.items():
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def train_command(config, output, *args, nproc=1):
    if nproc == 1:
        return [sys.executable, "-m", "mmclip.cli", "train", str(config), "--output", str(output), *args]
    launcher = [os.path.join(VENV_BIN, "torchrun"), "--nproc_per_node", str(nproc), "--master_port", "29617"]
    return [*launcher, "-m", "mmclip.cli", "train", str(config), "--output", str(output), *args]


def run_train(config, output, *args, nproc=1):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"  # two ranks on two cores; the same kernels in every setup
    result = subprocess.run(
        train_command(config, output, *args, nproc=nproc), cwd=REPO, env=env, capture_output=True, text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def read_log(output):
    """The last record of each step (a resumed run logs again from its checkpoint)."""
    records = {}
    for line in (output / "log.jsonl").read_text().splitlines():
        record = json.loads(line)
        records[record["step"]] = record
    return [records[step] for step in sorted(records)]


def read_keys(output, rank=0):
    records = {}
    for line in (output / "keys" / f"rank_{rank:03d}.jsonl").read_text().splitlines():
        record = json.loads(line)
        records[record["step"]] = record
    return [records[step] for step in sorted(records)]


def weights(output, step):
    return load_file(str(output / "checkpoints" / f"step_{step:06d}" / "model.safetensors"))


# Two ranks against one: fp32 sums in another order, which Adam's normalisation amplifies on
# weights with near-zero gradients (measured: up to 2.4e-5 in one full-suite run, under 1e-5 in others).
# A wrong batch split or a missing reduction moves weights by the LR, 1e-3, per step.
TWO_RANK_ATOL = 1e-4


def assert_close(a, b, atol):
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= atol, worst


@pytest.fixture(scope="module")
def baseline(workspace):
    output = workspace / "baseline"
    run_train(stage_config(workspace, "baseline"), output)
    return output


def test_train_end_to_end(baseline):
    log = read_log(baseline)
    assert [r["step"] for r in log] == list(range(1, 21))
    first, last = log[0], log[-1]
    for key in ("loss", "loss/text_pair", "loss/image_text", "loss/image_text/loss@16", "loss/text_pair/loss@64"):
        assert key in first
    assert np.mean([r["loss"] for r in log[-5:]]) < np.mean([r["loss"] for r in log[:5]])
    assert set(last["lr"]) == {"vision", "text", "logit_scale"} and last["mfu"] is None
    assert last["samples"] == {"text_pair": 80, "image_text": 80} and last["samples_per_s"] > 0
    assert 0 < last["temperature"]["image_text"] <= 1 and last["skipped"] == {"text_pair": {}, "image_text": {}}
    checkpoints = baseline / "checkpoints"
    assert (checkpoints / "latest").read_text().strip() == "step_000020"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["latest"] + [f"step_{s:06d}" for s in (5, 10, 15, 20)]
    final = checkpoints / "step_000020"
    assert json.loads((final / "trainer_state.json").read_text())["step"] == 20
    assert (final / "model.yaml").is_file() and (final / "rank_000.json").is_file()
    assert yaml.safe_load((baseline / "config.yaml").read_text())["steps"] == 20
    assert any((baseline / "tensorboard").iterdir())


def test_two_ranks_match_one(workspace, baseline):
    output = workspace / "two_ranks"
    run_train(stage_config(workspace, "two_ranks", steps=20, **{"checkpoint.every_steps": 5}), output, nproc=2)
    one = read_keys(baseline)
    ranks = [read_keys(output, rank) for rank in (0, 1)]
    for step in range(20):  # the same global batch, in the same order, at every step
        for stream in ("text_pair", "image_text"):
            assert one[step][stream] == ranks[0][step][stream] + ranks[1][step][stream]
    losses_one = [r["loss"] for r in read_log(baseline)]
    losses_two = [r["loss"] for r in read_log(output)]
    assert losses_two == pytest.approx(losses_one, rel=1e-4)  # fp32 sums in another order, grown over 20 steps (measured 2e-5)
    assert_close(weights(output, 5), weights(baseline, 5), atol=TWO_RANK_ATOL)


def kill_after_checkpoint(config, output, step, timeout=240):
    """Start a run and SIGKILL it as soon as the checkpoint of ``step`` exists."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(train_command(config, output), cwd=REPO, env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + timeout
        while not (output / "checkpoints" / f"step_{step:06d}").exists() and process.poll() is None:
            assert time.time() < deadline
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"


@pytest.mark.slow
def test_kill_and_resume(workspace, baseline):
    config, output = stage_config(workspace, "killed"), workspace / "killed"
    kill_after_checkpoint(config, output, 5)
    run_train(config, output, "--resume", "auto")
    assert [r["loss"] for r in read_log(output)] == pytest.approx([r["loss"] for r in read_log(baseline)], abs=1e-6)
    assert read_keys(output) == read_keys(baseline)
    assert_close(weights(output, 20), weights(baseline, 20), atol=1e-6)


@pytest.mark.slow
def test_stage_chain(workspace):
    stage1 = stage_config(
        workspace, "stage1", steps=4, clip={"resolution_schedule": [{"step": 2, "image_size": 84}]},
        **{"checkpoint.every_steps": 4, "logging.sample_keys": False},
    )
    run_train(stage1, workspace / "stage1")
    log1 = read_log(workspace / "stage1")
    assert [r["image_size"] for r in log1] == [56, 56, 84, 84]
    assert weights(workspace / "stage1", 4)["vision.pos_embed"].shape[1] == 1 + 6 * 6

    stage2 = stage_config(
        workspace, "stage2", steps=3, init_from=str(workspace / "stage1"),
        **{"data.image_size": 84, "checkpoint.every_steps": 3, "logging.sample_keys": False},
    )
    run_train(stage2, workspace / "stage2")
    start, after = weights(workspace / "stage1", 4), weights(workspace / "stage2", 3)
    assert after["vision.pos_embed"].shape == start["vision.pos_embed"].shape  # 84 px, 6 x 6 patches
    # Stage 2 starts from stage 1's weights: 3 steps at LR <= 1e-3 move them by a few 1e-3 at most.
    assert_close(after, start, atol=5e-3)

    stage3 = stage_config(
        workspace, "stage3", steps=3, init_from=str(workspace / "stage2" / "checkpoints" / "step_000003"),
        **{"data.image_size": 112, "checkpoint.every_steps": 3, "logging.sample_keys": False},
    )
    config = yaml.safe_load(stage3.read_text())
    config["data"]["streams"]["text_triplet"] = {
        "kind": "text_triplet", "shards": [str(workspace / "text_triplet")], "batch_size": 2,
    }
    del config["data"]["streams"]["text_pair"]
    stage3.write_text(yaml.safe_dump(config))
    run_train(stage3, workspace / "stage3")
    log3 = read_log(workspace / "stage3")
    assert "loss/text_triplet" in log3[-1] and log3[-1]["image_size"] == 112
    assert weights(workspace / "stage3", 3)["vision.pos_embed"].shape[1] == 1 + 8 * 8


@pytest.mark.parametrize(
    "extra, world_size, key",
    [
        ({"optimizer.lr_visoin": 1e-3}, 1, "optimizer.lr_visoin"),
        ({}, 3, "data.streams.image_text.batch_size"),
        ({"data.image_size": 8}, 1, "data.image_size"),
        ({"clip": {"resolution_schedule": [{"step": 5, "image_size": 10}]}}, 1, "clip.resolution_schedule[0].image_size"),
    ],
)
def test_config_errors_name_the_key(workspace, extra, world_size, key):
    config = stage_config(workspace, "bad", **{k: v for k, v in extra.items() if k != "optimizer.lr_visoin"})
    if "optimizer.lr_visoin" in extra:
        data = yaml.safe_load(config.read_text())
        data["optimizer"]["lr_visoin"] = 1e-3
        config.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_train_config(config, [], world_size)


def test_cli_fails_before_work(workspace, tmp_path):
    config = stage_config(workspace, "uneven")
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "3", "LOCAL_RANK": "0"}
    result = subprocess.run(train_command(config, tmp_path / "run"), cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and "data.streams.image_text.batch_size" in result.stderr
    assert not (tmp_path / "run").exists()


def wait_for_step(output, step, processes, timeout=240):
    """Until rank 0 has logged ``step`` (after the previous step's checkpoint, if it had one)."""
    log, deadline = output / "log.jsonl", time.time() + timeout
    while not (log.exists() and f'{{"step": {step},' in log.read_text()):
        assert all(p.poll() is None for p in processes), "a rank ended before the step"
        assert time.time() < deadline
        time.sleep(0.005)


def start_ranks(config, output, world, *args):
    """One process per rank with the launcher's variables, as srun starts them (each exit status visible)."""
    output.mkdir(parents=True, exist_ok=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    processes = []
    for rank in range(world):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RANK": str(rank), "WORLD_SIZE": str(world),
               "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        stderr = (output / f"stderr_{rank}.txt").open("a")
        processes.append(subprocess.Popen(train_command(config, output, *args), cwd=REPO, env=env, stderr=stderr))
    return processes


def latest_step(output):
    return int((output / "checkpoints" / "latest").read_text().strip().removeprefix("step_"))


@pytest.mark.slow
def test_sigusr1_checkpoints_and_resume_equals_uninterrupted(workspace, baseline):
    config, output = stage_config(workspace, "sigusr1"), workspace / "sigusr1"
    (process,) = start_ranks(config, output, 1)
    try:
        wait_for_step(output, 6, [process])  # past step 5's checkpoint: the signal's step saves its own
        process.send_signal(signal.SIGUSR1)
    finally:
        process.wait(timeout=120)
    assert process.returncode == EXIT_PREEMPTED, (output / "stderr_0.txt").read_text()[-3000:]
    stopped = latest_step(output)  # the step the signal interrupted, saved although not every_steps'
    assert 5 < stopped < 20 and stopped % 5 != 0
    assert read_log(output)[-1]["step"] == stopped
    run_train(config, output, "--resume", "auto")
    assert [r["loss"] for r in read_log(output)] == pytest.approx([r["loss"] for r in read_log(baseline)], abs=1e-6)
    assert read_keys(output) == read_keys(baseline)
    assert_close(weights(output, 20), weights(baseline, 20), atol=1e-6)


@pytest.mark.slow
def test_sigterm_to_one_of_two_grad_cache_ranks_stops_both(workspace, baseline):
    """SIGTERM reaches rank 1 only; both ranks stop and save at the same step. The run also uses
    GradCache (one sample per chunk), so the resumed run matching 1 unchunked rank checks both."""
    config = stage_config(workspace, "sigterm", grad_cache_chunk={"text_pair": 1, "image_text": 1})
    output = workspace / "sigterm"
    processes = start_ranks(config, output, 2)
    try:
        wait_for_step(output, 6, processes)
        processes[1].send_signal(signal.SIGTERM)
    finally:
        for process in processes:
            process.wait(timeout=120)
    assert [p.returncode for p in processes] == [EXIT_PREEMPTED] * 2, (output / "stderr_0.txt").read_text()[-3000:]
    stopped = latest_step(output)
    assert 5 < stopped < 20 and stopped % 5 != 0 and sorted(p.name for p in (output / "checkpoints" / f"step_{stopped:06d}").glob("rank_*")) \
        == ["rank_000.json", "rank_001.json"]
    processes = start_ranks(config, output, 2, "--resume", "auto")
    for process in processes:
        process.wait(timeout=240)
    assert [p.returncode for p in processes] == [0, 0], (output / "stderr_0.txt").read_text()[-3000:]
    one, ranks = read_keys(baseline), [read_keys(output, rank) for rank in (0, 1)]
    for step in range(20):
        for stream in ("text_pair", "image_text"):
            assert one[step][stream] == ranks[0][step][stream] + ranks[1][step][stream]
    assert [r["loss"] for r in read_log(output)] == pytest.approx([r["loss"] for r in read_log(baseline)], rel=1e-4)  # as test_two_ranks_match_one
    assert_close(weights(output, 20), weights(baseline, 20), atol=TWO_RANK_ATOL)


def test_trainer_adamw_is_fused_and_takes_torch_reference_steps():
    torch.manual_seed(0)
    weights = [torch.randn(64, 32), torch.randn(32)]
    fused_params = [w.clone().requires_grad_() for w in weights]
    loop_params = [w.clone().requires_grad_() for w in weights]
    fused = adamw(fused_params, lr=1e-2, weight_decay=0.05, betas=(0.9, 0.98), eps=1e-6)
    loop = torch.optim.AdamW(loop_params, lr=1e-2, weight_decay=0.05, betas=(0.9, 0.98), eps=1e-6, foreach=False)
    assert fused.defaults["fused"]
    for _ in range(5):
        grads = [torch.randn_like(w) for w in weights]
        for params, optimizer in ((fused_params, fused), (loop_params, loop)):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            optimizer.step()
    for a, b, w in zip(fused_params, loop_params, weights):
        assert not torch.equal(a, w)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
