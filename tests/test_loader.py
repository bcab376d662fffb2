"""The training loader: batches of every kind, bad samples skipped and counted, node/worker splits,
exact resume across a killed process, and image transforms against torchvision."""

import io
import json
import logging
import os
import random
import signal
import struct
import subprocess
import sys
import tarfile
import time
import zlib
from dataclasses import asdict

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image
from torchvision import transforms as T

from mmclip import ConfigError, load_config
from mmclip.data import DataConfig, ImageTransform, MultiStreamLoader, StreamDataset
from mmclip.data.formats import ImageText, TextPair, TextTriplet
from mmclip.data.shards import ShardSetWriter
from mmclip.data.transforms import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, normalize, random_resized_crop_box
from data_pipelines.synthetic.tokenizer import train_tokenizer
from mmclip.tokenizer import load_tokenizer

from .conftest import MULTILINGUAL_SENTENCES, REPO

SENTENCES = MULTILINGUAL_SENTENCES[:6]


def encode_image(pixels: np.ndarray, fmt: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(
        out, "JPEG" if fmt == "jpg" else fmt.upper(), **({"quality": 90} if fmt == "jpg" else {})
    )
    return out.getvalue()


def smooth_image(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Colour fields plus mild noise: natural enough that JPEG and resampling behave as on photos."""
    grid = Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    noisy = np.asarray(grid, np.float32) + rng.normal(0, 6, (height, width, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def caption(i: int) -> str:
    return f"{SENTENCES[i % len(SENTENCES)]} {i}"


IMAGE_SIZES = [(48, 32), (32, 48), (40, 40), (640, 480)]  # landscape, portrait, square, and one to draft


def write_image_text(directory, n, max_samples=4):
    """JPEG and PNG samples ``img0000``...; returns the pixels of each by key."""
    rng, pixels = np.random.default_rng(n), {}
    with ShardSetWriter(directory, "image_text", max_samples=max_samples) as writer:
        for i in range(n):
            key, fmt, (width, height) = f"img{i:04d}", "png" if i % 3 == 0 else "jpg", IMAGE_SIZES[i % 4]
            pixels[key] = smooth_image(rng, width, height)
            writer.write(ImageText(key, encode_image(pixels[key], fmt), fmt, caption(i), width=width, height=height))
    return pixels


def write_text_pairs(directory, n, max_samples=4):
    with ShardSetWriter(directory, "text_pair", max_samples=max_samples) as writer:
        for i in range(n):
            writer.write(TextPair(f"pair{i:04d}", caption(i), caption(i + 1)))
    return directory


def write_triplets(directory, n, max_samples=4):
    with ShardSetWriter(directory, "text_triplet", max_samples=max_samples) as writer:
        for i in range(n):
            negatives = [caption(i + 2 + j) for j in range(7 + i % 2)]  # 7 or 8: the loader keeps 7
            writer.write(TextTriplet(f"tri{i:04d}", caption(i), caption(i + 1), negatives))
    return directory


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(SENTENCES * 10, vocab_size=300, output_dir=path)
    return path


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return load_tokenizer(tokenizer_dir)


def make_config(streams, **kwargs):
    defaults = {"image_size": 32, "context_length": 16, "num_workers": 0, "shuffle_block": 6, "interleave": 2}
    return DataConfig(streams=streams, **{**defaults, **kwargs})


def one_epoch(config, name, tokenizer, rank=0, world_size=1):
    """Every batch of one pass over the stream, worker by worker, in-process."""
    dataset = StreamDataset(config, name, tokenizer, rank=rank, world_size=world_size, epochs=1)
    return [batch for worker in range(dataset.num_workers) for batch in dataset.batches(worker)]


def assert_tokens(tokenizer, ids, mask, texts, context_length):
    expected = tokenizer(texts, max_length=context_length, truncation=True)["input_ids"]
    assert ids.dtype == torch.int64 and ids.shape == mask.shape and ids.shape[-1] <= context_length
    assert ids.shape[-1] == max(len(e) for e in expected)  # padded to the longest, not to the context
    for row, row_mask, want in zip(ids.reshape(-1, ids.shape[-1]), mask.reshape(-1, ids.shape[-1]), expected):
        assert row[: len(want)].tolist() == want and int(row_mask.sum()) == len(want)
        assert (row[len(want) :] == tokenizer.pad_token_id).all()


# --- round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [224, 384, 512])
def test_image_text_round_trip(tmp_path, tokenizer, size):
    sources = write_image_text(tmp_path, 10)
    config = make_config({"mm": {"kind": "image_text", "shards": [str(tmp_path)], "batch_size": 4}}, image_size=size)
    batches = one_epoch(config, "mm", tokenizer)
    keys = [key for batch in batches for key in batch["keys"]]
    assert sorted(keys) == sorted(sources) and [len(b["keys"]) for b in batches] == [4, 4, 2]
    for batch in batches:
        pixels = batch["pixel_values"]
        assert pixels.shape == (len(batch["keys"]), 3, size, size) and pixels.dtype == torch.uint8
        assert pixels.is_contiguous()
        for image, key in zip(pixels, batch["keys"]):  # the right image: a 90-100% crop keeps its colours
            source_mean = torch.from_numpy(sources[key]).float().mean((0, 1))
            assert (image.float().mean((1, 2)) - source_mean).abs().max() < 12
        captions = [caption(int(key[3:])) for key in batch["keys"]]
        assert_tokens(tokenizer, batch["input_ids"], batch["attention_mask"], captions, 16)


def test_text_pair_and_triplet_round_trip(tmp_path, tokenizer):
    write_text_pairs(tmp_path / "pairs", 9)
    write_triplets(tmp_path / "triplets", 6)
    config = make_config(
        {
            "pairs": {"kind": "text_pair", "shards": [str(tmp_path / "pairs")], "batch_size": 5},
            "triplets": {"kind": "text_triplet", "shards": [str(tmp_path / "triplets")], "batch_size": 3},
        },
        context_length=8,  # short enough to truncate
    )
    pairs = one_epoch(config, "pairs", tokenizer)
    assert sorted(k for b in pairs for k in b["keys"]) == [f"pair{i:04d}" for i in range(9)]
    for batch in pairs:
        index = [int(key[4:]) for key in batch["keys"]]
        assert_tokens(tokenizer, batch["query_ids"], batch["query_mask"], [caption(i) for i in index], 8)
        assert_tokens(tokenizer, batch["positive_ids"], batch["positive_mask"], [caption(i + 1) for i in index], 8)
    triplets = one_epoch(config, "triplets", tokenizer)
    assert sorted(k for b in triplets for k in b["keys"]) == [f"tri{i:04d}" for i in range(6)]
    for batch in triplets:
        index = [int(key[3:]) for key in batch["keys"]]
        assert batch["negative_ids"].shape[:2] == (len(index), 7)
        negatives = [caption(i + 2 + j) for i in index for j in range(7)]
        assert_tokens(tokenizer, batch["negative_ids"], batch["negative_mask"], negatives, 8)
        assert_tokens(tokenizer, batch["query_ids"], batch["query_mask"], [caption(i) for i in index], 8)


def test_steps_mix_one_batch_of_every_stream(tmp_path, tokenizer):
    write_image_text(tmp_path / "mm", 8)
    write_text_pairs(tmp_path / "pairs", 8)
    config = make_config(
        {
            "text_pair": {"kind": "text_pair", "shards": [str(tmp_path / "pairs")], "batch_size": 5},
            "image_text": {"kind": "image_text", "shards": [str(tmp_path / "mm")], "batch_size": 3},
        },
        num_workers=2,
    )
    steps = iter(MultiStreamLoader(config, tokenizer))
    for _ in range(6):  # beyond one epoch of both streams: training streams never end
        step = next(steps)
        assert list(step) == ["text_pair", "image_text"]
        assert len(step["text_pair"]["keys"]) == 5 and step["text_pair"]["query_ids"].shape[0] == 5
        assert step["image_text"]["pixel_values"].shape == (3, 3, 32, 32)
        assert not any(name.startswith("_") for batch in step.values() for name in batch)


# --- bad samples ----------------------------------------------------------------------------------


def png_with_header_size(width: int, height: int) -> bytes:
    """A small valid PNG whose IHDR claims ``width`` x ``height``: only a header check can refuse it."""
    data = bytearray(encode_image(np.zeros((8, 8, 3), np.uint8), "png"))
    ihdr = data[12:29]  # chunk type + 13 bytes of data
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


BAD_IMAGE_TEXT = {
    "corrupt_image": lambda good: {"jpg": b"\x00not an image" * 20},
    "truncated_image": lambda good: {"jpg": good[: len(good) // 2]},
    "empty_image": lambda good: {"jpg": b""},
    "non_utf8_text": lambda good: {"jpg": good, "txt": b"caf\xe9 \xff\xfe"},
    "empty_text": lambda good: {"jpg": good, "txt": b"  \n"},
    "decompression_bomb": lambda good: {"png": png_with_header_size(5000, 5000)},
}


def write_bad_shard_set(directory):
    """Two shards written by hand: good samples between bad ones, and a second tar cut mid-sample."""
    directory.mkdir()
    rng = np.random.default_rng(0)
    good = encode_image(smooth_image(rng, 64, 48), "jpg")
    samples, goods = [], []
    for i, (reason, make) in enumerate(BAD_IMAGE_TEXT.items()):
        goods.append(f"good{i}")
        samples.append({"__key__": f"good{i}", "jpg": good, "txt": caption(i).encode(), "json": b"{}"})
        samples.append({"__key__": f"bad-{reason}", "txt": b"a caption", "json": b"{}", **make(good)})
    counts = {"image_text-000000.tar": len(samples), "image_text-000001.tar": 4}
    with wds.TarWriter(str(directory / "image_text-000000.tar")) as tar:
        for sample in samples:
            tar.write(sample)
    with wds.TarWriter(str(directory / "image_text-000001.tar")) as tar:
        for i in range(4):
            tar.write({"__key__": f"tail{i}", "jpg": good, "txt": caption(i).encode(), "json": b"{}"})
    tail = directory / "image_text-000001.tar"
    with tarfile.open(tail) as tar:
        cut = next(m.offset_data + m.size // 2 for m in tar if m.name == "tail2.jpg")
    tail.write_bytes(tail.read_bytes()[:cut])  # in the middle of sample 2's image: loses samples 2 and 3
    manifest = {"format": "mmclip-shards", "version": 1, "kind": "image_text", "shards": counts}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return goods + ["tail0", "tail1"]


def test_bad_samples_are_skipped_and_counted_by_reason(tmp_path, tokenizer):
    goods = write_bad_shard_set(tmp_path / "bad")
    stream = {"kind": "image_text", "shards": [str(tmp_path / "bad")], "batch_size": 3}
    config = make_config({"mm": stream}, max_image_pixels=1_000_000)
    batches = one_epoch(config, "mm", tokenizer)
    assert sorted(k for b in batches for k in b["keys"]) == sorted(goods)
    skipped = {reason: 1 for reason in BAD_IMAGE_TEXT} | {"truncated_tar": 1}
    assert batches[-1]["_progress"]["skipped"] == skipped  # cumulative per worker, up to its last batch


def test_loader_logs_each_reason_once_and_aggregates_counts(tmp_path, tokenizer, caplog):
    write_bad_shard_set(tmp_path / "bad")
    write_text_pairs(tmp_path / "pairs", 6)
    config = make_config(
        {
            "mm": {"kind": "image_text", "shards": [str(tmp_path / "bad")], "batch_size": 2},
            "pairs": {"kind": "text_pair", "shards": [str(tmp_path / "pairs")], "batch_size": 2},
        },
        num_workers=2,
        max_image_pixels=1_000_000,
    )
    loader = MultiStreamLoader(config, tokenizer)
    with caplog.at_level(logging.WARNING, logger="mmclip.data.loader"):
        steps = iter(loader)
        for _ in range(16):  # worker 0 passes its 6 good samples (and the bad ones) 2.7 times
            next(steps)
    reasons = set(BAD_IMAGE_TEXT) | {"truncated_tar"}
    assert set(loader.skipped["mm"]) == reasons and loader.skipped["pairs"] == {}
    assert all(count >= 2 for count in loader.skipped["mm"].values())
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == len(reasons) and all(sum(f" {reason} " in m for m in logged) == 1 for reason in reasons)
    assert json.loads(json.dumps(loader.state_dict()))["streams"]["mm"]["workers"][0]["skipped"]


# --- shard selection ------------------------------------------------------------------------------


@pytest.mark.parametrize("shards, weight", [(7, 1.0), (3, 1.0), (7, 2.0)], ids=["7-shards", "3-shards", "weight-2"])
def test_ranks_and_workers_read_disjoint_samples_covering_the_epoch(tmp_path, tokenizer, shards, weight):
    write_text_pairs(tmp_path, shards * 3, max_samples=3)
    stream = {"kind": "text_pair", "shards": [str(tmp_path)], "batch_size": 2, "weights": [weight]}
    config = make_config({"pairs": stream}, num_workers=2)
    per_worker = [
        [
            key
            for batch in StreamDataset(config, "pairs", tokenizer, rank=rank, world_size=2, epochs=1).batches(w)
            for key in batch["keys"]
        ]
        for rank in range(2)
        for w in range(2)
    ]
    assert all(per_worker)  # with 3 shards for 4 workers, shards are split by sample
    every = sorted(key for keys in per_worker for key in keys)
    assert every == sorted([f"pair{i:04d}" for i in range(shards * 3)] * int(weight))
    if weight == 1:
        assert len(set(every)) == len(every)


def test_epochs_reshuffle_and_resampling_is_seeded_per_worker(tmp_path, tokenizer):
    write_text_pairs(tmp_path, 24, max_samples=3)
    stream = {"kind": "text_pair", "shards": [str(tmp_path)], "batch_size": 24}
    epochs = StreamDataset(make_config({"p": stream}), "p", tokenizer, epochs=2).batches(0)
    first, second = next(epochs)["keys"], next(epochs)["keys"]
    assert sorted(first) == sorted(second) and first != second

    resampled = make_config({"p": stream}, resampled=True, num_workers=2)

    def draws(worker):
        return next(StreamDataset(resampled, "p", tokenizer, rank=1, world_size=2).batches(worker))["keys"]

    assert draws(0) == draws(0) and draws(0) != draws(1)
    assert len(set(draws(0))) < 24  # 8 shards drawn with replacement from 8: some twice


# --- exact resume ---------------------------------------------------------------------------------

CHILD = r"""
import json, os, sys, time
from mmclip.data import DataConfig, MultiStreamLoader
from mmclip.tokenizer import load_tokenizer
from tests.test_loader import record
config_path, tokenizer_dir, log_path, state_path, save_at, steps = sys.argv[1:]
loader = MultiStreamLoader(DataConfig(**json.load(open(config_path))), load_tokenizer(tokenizer_dir))
if os.path.exists(state_path):
    loader.load_state_dict(json.load(open(state_path)))
with open(log_path, "a") as log:
    for step, batches in enumerate(loader, start=1):
        log.write(json.dumps(record(batches)) + "\n")
        log.flush()
        if step == int(save_at):
            with open(state_path + ".tmp", "w") as f:
                json.dump(loader.state_dict(), f)
            os.replace(state_path + ".tmp", state_path)
        if step == int(steps):
            break
        time.sleep(0.05)  # slower than the workers: they prefetch ahead of what is consumed
"""


def record(batches):
    """What a step must repeat exactly on resume: the keys, and the pixels (so the crops too)."""
    return {
        name: [b["keys"], int(b["pixel_values"].sum()) if "pixel_values" in b else 0] for name, b in batches.items()
    }


def test_resume_after_sigkill_sees_exactly_the_uninterrupted_samples(tmp_path, tokenizer_dir, tokenizer):
    write_image_text(tmp_path / "mm", 30, max_samples=4)
    write_text_pairs(tmp_path / "pairs", 25, max_samples=3)
    config = make_config(
        {
            "image_text": {"kind": "image_text", "shards": [str(tmp_path / "mm")], "batch_size": 3},
            "text_pair": {"kind": "text_pair", "shards": [str(tmp_path / "pairs")], "batch_size": 4},
        },
        num_workers=2,
        shuffle_block=5,  # steps cross blocks, shards and epochs
    )
    (tmp_path / "config.json").write_text(json.dumps(asdict(config)))
    total, save_at = 24, 9
    steps = iter(MultiStreamLoader(config, tokenizer))
    expected = [record(next(steps)) for _ in range(total)]
    del steps

    def child(log_name, stop_after):
        args = [tmp_path / "config.json", tokenizer_dir, tmp_path / log_name, tmp_path / "state.json", save_at]
        return subprocess.Popen([sys.executable, "-c", CHILD, *map(str, args), str(stop_after)], cwd=REPO)

    def logged(log_name):
        path = tmp_path / log_name
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    killed = child("killed.jsonl", 10**6)  # runs until killed
    try:
        deadline = time.monotonic() + 60
        while len(logged("killed.jsonl")) < save_at + 4:  # the state is saved at save_at; go past it
            assert killed.poll() is None and time.monotonic() < deadline, "the first run died or hung"
            time.sleep(0.05)
    finally:
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
    resumed = child("resumed.jsonl", total - save_at)
    assert resumed.wait(timeout=120) == 0
    assert logged("killed.jsonl")[:save_at] + logged("resumed.jsonl") == expected


def test_state_from_another_layout_is_refused(tmp_path, tokenizer):
    write_text_pairs(tmp_path, 8)
    stream = {"kind": "text_pair", "shards": [str(tmp_path)], "batch_size": 2}
    state = MultiStreamLoader(make_config({"p": stream}, num_workers=2), tokenizer).state_dict()
    loader = MultiStreamLoader(make_config({"p": stream}, num_workers=3), tokenizer)
    with pytest.raises(ValueError, match=r"streams.p.num_workers was 2, is 3"):
        loader.load_state_dict(state)
    with pytest.raises(ValueError, match=r"world_size was 1, is 2"):
        MultiStreamLoader(make_config({"p": stream}, num_workers=2), tokenizer, rank=1, world_size=2).load_state_dict(
            state
        )


# --- transforms -----------------------------------------------------------------------------------


def reference_eval(size):
    return T.Compose(
        [
            T.Resize(size, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(size),
            T.ToTensor(),
            T.Normalize(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
        ]
    )


@pytest.mark.parametrize("width, height, fmt", [(300, 200, "png"), (150, 260, "jpg"), (100, 100, "png")])
def test_eval_transform_equals_the_reference_pipeline(width, height, fmt):
    data = encode_image(smooth_image(np.random.default_rng(1), width, height), fmt)
    ours = normalize(ImageTransform(224, train=False)(data))
    reference = reference_eval(224)(Image.open(io.BytesIO(data)).convert("RGB"))
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


def test_train_transform_is_torchvisions_random_resized_crop():
    data = encode_image(smooth_image(np.random.default_rng(2), 320, 240), "png")
    image = Image.open(io.BytesIO(data)).convert("RGB")
    for seed in range(4):
        left, top, right, bottom = random_resized_crop_box(320, 240, (0.9, 1.0), (3 / 4, 4 / 3), random.Random(seed))
        assert 0.9 * 320 * 240 - 400 <= (right - left) * (bottom - top) <= 320 * 240
        ours = ImageTransform(224, train=True)(data, random.Random(seed))
        reference = T.functional.resized_crop(
            image, top, left, bottom - top, right - left, [224, 224], T.InterpolationMode.BICUBIC
        )
        reference = torch.from_numpy(np.asarray(reference).copy()).permute(2, 0, 1)
        assert (ours.float() - reference.float()).abs().mean() < 0.5  # torch vs PIL bicubic: within rounding


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_reduced_scale_jpeg_decode_is_close_to_full_decode(train):
    data = encode_image(smooth_image(np.random.default_rng(3), 1024, 768), "jpg")
    fast = ImageTransform(224, train=train, reduced_decode=True)(data, random.Random(0))
    full = ImageTransform(224, train=train)(data, random.Random(0))
    difference = (normalize(fast) - normalize(full)).abs()
    assert difference.mean() < 0.02 and difference.max() < 0.5  # normalised units; one level is ~0.015


def test_decompression_bomb_is_refused_from_the_header():
    with pytest.raises(Exception, match="decompression_bomb: 5000x5000 pixels"):
        ImageTransform(224, train=False, max_pixels=1_000_000)(png_with_header_size(5000, 5000))


# --- config ---------------------------------------------------------------------------------------


def test_data_config_loads_from_yaml_and_names_bad_fields(tmp_path):
    path = tmp_path / "data.yaml"
    path.write_text(
        "image_size: 384\ncontext_length: 512\nstreams:\n"
        "  text_pair: {kind: text_pair, shards: [a], batch_size: 8}\n"
        "  image_text: {kind: image_text, shards: [b, c], batch_size: 4, weights: [1, 2]}\n"
    )
    config = load_config(DataConfig, path)
    assert config.streams["image_text"].weights == [1.0, 2.0] and config.context("text_pair") == 512
    with pytest.raises(ConfigError, match=r"streams.image_text.batch_size: must be positive"):
        load_config(DataConfig, path, ["streams.image_text.batch_size=0"])
    with pytest.raises(ConfigError, match=r"streams.text_pair.kind: must be one of"):
        load_config(DataConfig, path, ["streams.text_pair.kind=pairs"])
    with pytest.raises(ConfigError, match=r"streams.image_text.weights: needs one weight per shard set"):
        load_config(DataConfig, path, ["streams.image_text.weights=[1]"])
    # The loader's pixels are always uint8 (the training step normalises them once, on the device).
    with pytest.raises(ConfigError, match=r"pixel_dtype: removed: the loader always yields uint8 pixels"):
        load_config(DataConfig, path, ["pixel_dtype=float32"])
