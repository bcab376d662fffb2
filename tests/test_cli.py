"""`mmclip info` end to end, as a user runs it."""

import json
import subprocess
import sys

import pytest

from .conftest import FULL, REPO, TINY


def mmclip(*args):
    return subprocess.run(
        [sys.executable, "-m", "mmclip.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_info_full_size_json():
    result = mmclip("info", str(FULL), "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert abs(info["parameters"]["text"]["total"] / 561e6 - 1) < 0.01
    assert abs(info["parameters"]["vision"]["total"] / 304e6 - 1) < 0.01
    assert info["parameters"]["text"]["non_embedding"] < 0.6 * info["parameters"]["text"]["total"]
    assert info["matryoshka_dims"] == [64, 128, 256, 512, 768, 1024]
    stage1 = info["flops_per_sample"][0]
    # open_clip's model profile lists EVA02-L/14 at 224 px as 162.0 GFLOPs, every token through every
    # block; the embedding's forward skips the last block's work for the 256 patch tokens after their
    # q/k/v: output projection and SwiGLU (2 (w^2 + 3 w h) each) and their scores and values (4 N w).
    width, hidden, tokens = 1024, 2730, 257
    skipped = (tokens - 1) * (2 * (width**2 + 3 * width * hidden) + 4 * tokens * width) / 1e9
    assert stage1["image_size"] == 224
    assert stage1["vision_forward_gflops"] == pytest.approx(162.0 - skipped, rel=0.005)
    sizes = [(row["image_size"], row["context_length"]) for row in info["flops_per_sample"]]
    assert sizes == [(224, 77), (384, 77), (384, 512), (512, 512)]


def test_info_tiny_table():
    result = mmclip("info", str(TINY))
    assert result.returncode == 0, result.stderr
    assert "vision" in result.stdout and "GFLOPs per sample" in result.stdout and "stage3" in result.stdout


def test_info_config_error_exits_2_with_the_key():
    result = mmclip("info", str(TINY), "--set", "vision.widht=32")
    assert result.returncode == 2
    assert f"{TINY}: unknown key 'vision.widht'" in result.stderr
