"""Training data-loading throughput on CPU: mmclip's loader against a plain webdataset pipeline.

Both sides read the same image-text shards of photo-sized JPEGs (1024x768, quality 90, generated
at start: colour fields, shapes, texture and noise, about 200 KB each), and produce, per batch, the
training crop at ``size`` and the tokenized captions, with the same worker count and batch size:

* baseline: ``wds.WebDataset`` (split by worker) -> raw-sample shuffle -> ``decode("pilrgb")`` ->
  torchvision ``RandomResizedCrop(size, scale=(0.9, 1), bicubic)`` + ``ToTensor`` + ``Normalize``,
  the caption tokenized per sample (padded to the context length, as open_clip) -> ``batched``;
* ours: :class:`mmclip.data.MultiStreamLoader` with one image-text stream (reduced-scale JPEG
  decode, torch's uint8 antialiased bicubic on the crop, batch tokenization) and ``uint8`` pixels,
  which training normalises on the device (``mmclip.train.step``).

With ``--source http`` the shards are served by a loopback HTTP server (``python -m http.server``
on 127.0.0.1): the baseline reads the URLs (webdataset streams them with curl), ours reads the
same URLs as a brace pattern (read ahead in a thread per tar) and, in the same run, the local
files; ``http_over_local`` is ours over HTTP against ours from disk, and ``server_cores_busy`` the
share of a core the server itself used during each loader's runs (CPU that a remote server would
not take from this machine); ``server_requests`` counts the tars it served to each HTTP loader.

Each run consumes ``--samples`` samples; the clock starts at the first batch, so worker start-up
is excluded but every shard read after it is not. Runs alternate between the loaders. One JSON
object goes to stdout (and ``--output``); progress goes to stderr.

    .venv/bin/python bench/dataload.py --output bench/results/dataload.json
    .venv/bin/python bench/dataload.py --sizes 224 --workers 1 --samples 200   # quick look
    .venv/bin/python bench/dataload.py --source http --sizes 224 --workers 2 --output bench/results/dataload_http.json
"""

from __future__ import annotations

import argparse
import importlib.metadata
import io
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import PIL
import psutil
import torch
import torchvision
import webdataset as wds
from PIL import Image, ImageDraw
from report import cpu_model, emit  # bench/report.py: scripts here run with bench/ on sys.path
from torchvision import transforms as T

from mmclip.data import DataConfig, MultiStreamLoader
from mmclip.data.formats import ImageText
from mmclip.data.shards import ShardSetWriter
from mmclip.data.transforms import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, TRAIN_SCALE
from data_pipelines.synthetic.tokenizer import train_tokenizer
from mmclip.tokenizer import load_tokenizer

CAPTIONS = [
    "a red car parked next to a blue house",
    "eine Katze schläft auf dem Sofa",
    "un chien qui court sur la plage au coucher du soleil",
    "дети играют в парке летом",
    "一只小鸟站在树枝上",
    "फूलों से भरा एक बगीचा",
    "a bowl of fresh fruit on a wooden table",
    "montañas nevadas bajo un cielo despejado",
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="224,384,512", help="comma-separated crop sizes")
    parser.add_argument("--workers", default="1,2", help="comma-separated DataLoader worker counts")
    parser.add_argument("--samples", type=int, default=1000, help="samples consumed per run")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--context-length", type=int, default=77)
    parser.add_argument("--shuffle", type=int, default=200, help="shuffle block (ours) and buffer (baseline)")
    parser.add_argument("--images", type=int, default=100, help="distinct JPEGs generated (cycled over samples)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per loader and setting (median reported)")
    parser.add_argument(
        "--source", choices=("local", "http"), default="local", help="shards from disk or from loopback HTTP"
    )
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    args.workers = [int(w) for w in args.workers.split(",") if w]
    if min(args.workers) < 1:
        parser.error("--workers: throughput per worker needs at least one worker")
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def photo(rng: np.random.Generator, width: int = 1024, height: int = 768) -> bytes:
    """A JPEG with photo-like statistics: smooth colour fields, hard-edged shapes, texture, noise."""
    grid = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    image = Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(5, 15))):
        x, y, r = int(rng.integers(0, width)), int(rng.integers(0, height)), int(rng.integers(20, 250))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x - r, y - r * 0.7, x + r, y + r * 0.7], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    texture = rng.integers(0, 256, (height // 4, width // 4), dtype=np.uint8)
    texture = np.asarray(Image.fromarray(texture).resize((width, height), Image.Resampling.BILINEAR), np.float32)
    pixels = np.asarray(image, np.float32) + (texture[..., None] - 128) * 0.25 + rng.normal(0, 4, (height, width, 3))
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=90)
    return out.getvalue()


def write_shards(directory: Path, samples: int, images: int, shards: int) -> float:
    """The benchmark's shard set; returns the mean JPEG size in bytes."""
    rng = np.random.default_rng(0)
    jpegs = [photo(rng) for _ in range(images)]
    with ShardSetWriter(directory, "image_text", max_samples=-(-samples // shards)) as writer:
        for i in range(samples):
            caption = f"{CAPTIONS[i % len(CAPTIONS)]} ({i})"
            writer.write(ImageText(f"sample{i:06d}", jpegs[i % images], "jpg", caption, width=1024, height=768))
    return float(np.mean([len(j) for j in jpegs]))


class Tokenize:
    """Per-sample tokenization padded to the context length, as open_clip's HFTokenizer (picklable)."""

    def __init__(self, tokenizer, context_length: int):
        self.tokenizer, self.context_length = tokenizer, context_length

    def __call__(self, text: str) -> torch.Tensor:
        return self.tokenizer(
            text, max_length=self.context_length, truncation=True, padding="max_length", return_tensors="pt"
        )["input_ids"][0]


def baseline_batches(shards: list[str], size: int, args, tokenizer) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    preprocess = T.Compose(
        [
            T.RandomResizedCrop(size, scale=TRAIN_SCALE, interpolation=T.InterpolationMode.BICUBIC),
            T.ToTensor(),
            T.Normalize(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
        ]
    )
    pipeline = (
        wds.WebDataset(shards, shardshuffle=False, workersplitter=wds.split_by_worker)
        .shuffle(args.shuffle)
        .decode("pilrgb")
        .to_tuple("jpg", "txt")
        .map_tuple(preprocess, Tokenize(tokenizer, args.context_length))
        .batched(args.batch_size, partial=False)
    )
    return iter(wds.WebLoader(pipeline, batch_size=None, num_workers=args.num_workers, prefetch_factor=2))


def our_batches(source: str, size: int, args, tokenizer) -> Iterator[tuple]:
    config = DataConfig(
        streams={"image_text": {"kind": "image_text", "shards": [source], "batch_size": args.batch_size}},
        image_size=size,
        context_length=args.context_length,
        num_workers=args.num_workers,
        shuffle_block=args.shuffle,
    )
    for step in MultiStreamLoader(config, tokenizer, pin_memory=False):
        batch = step["image_text"]
        yield batch["pixel_values"], batch["input_ids"]


def serve(directory: Path, access_log: Path) -> tuple[subprocess.Popen, str]:
    """``python -m http.server`` on a free loopback port, once it answers; stop it with ``terminate``.

    The server writes a line per request to ``access_log``."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(directory)]
    with access_log.open("w") as log_file:
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log_file)
    for _ in range(100):  # up to 10 s
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    server.terminate()
    raise RuntimeError("the loopback HTTP server did not start")


def served_requests(access_log: Path, prefixes: list[str]) -> dict[str, int]:
    """Successful GETs per top-level path ``prefix`` in the server's access log."""
    lines = access_log.read_text().splitlines()
    return {prefix: sum(f'"GET /{prefix}/' in line and '" 200 ' in line for line in lines) for prefix in prefixes}


def _cpu_seconds(process: psutil.Process | None) -> float:
    if process is None:
        return 0.0
    times = process.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def time_run(batches: Iterator[tuple], samples: int) -> tuple[float, tuple]:
    """Samples per second after the first batch (worker start-up excluded), and the first batch's shapes."""
    first = next(batches)
    start, seen = time.perf_counter(), 0
    while seen < samples:
        pixels, _ = next(batches)
        seen += len(pixels)
    elapsed = time.perf_counter() - start
    del batches  # shuts the workers down before the next run
    return seen / elapsed, (tuple(first[0].shape), str(first[0].dtype))


def measure(loaders: dict, args, server: subprocess.Popen | None = None) -> list[dict]:
    """Median samples/s per loader and setting; runs alternate between the loaders.

    With a loopback ``server``, also the share of a core it kept busy during each loader's runs:
    on a machine with few cores, serving could compete with the loader's own decoding, which a
    remote server would not."""
    server_cpu = psutil.Process(server.pid) if server is not None else None
    results = []
    for num_workers in args.workers:
        args.num_workers = num_workers
        for size in args.sizes:
            rates: dict[str, list[float]] = {name: [] for name in loaders}
            server_load: dict[str, list[float]] = {name: [] for name in loaders}
            shapes = {}
            for _ in range(args.repeats):
                for name, make in loaders.items():
                    cpu_before, wall_before = _cpu_seconds(server_cpu), time.perf_counter()
                    rate, shapes[name] = time_run(make(size), args.samples)
                    wall = time.perf_counter() - wall_before
                    server_load[name].append((_cpu_seconds(server_cpu) - cpu_before) / wall)
                    rates[name].append(rate)
                    log(f"[{size}px, {num_workers} workers] {name}: {rate:.1f} samples/s")
            median = {name: statistics.median(r) for name, r in rates.items()}
            ratios = {"ratio": median["ours"] / median["baseline"]}
            if "ours_local" in median:  # ours over HTTP against ours from disk
                ratios["http_over_local"] = median["ours"] / median["ours_local"]
            if server_cpu is not None:
                ratios["server_cores_busy"] = {name: round(statistics.median(v), 3) for name, v in server_load.items()}
            results.append(
                {
                    "size": size,
                    "num_workers": num_workers,
                    **{f"{name}_samples_per_s": median[name] for name in loaders},
                    **{f"{name}_samples_per_s_per_worker": median[name] / num_workers for name in loaders},
                    **ratios,
                    "pixel_values": shapes,
                    "runs": rates,
                }
            )
    return results


def main() -> None:
    args = parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # Enough samples that no worker runs out in a single pass (the baseline stops after one).
        total = args.samples * (args.repeats + 1) + args.batch_size * max(args.workers) * 2
        shards = 4 * max(args.workers)
        log(f"writing {total} samples into {shards} shards ({args.images} distinct 1024x768 JPEGs)")
        jpeg_bytes = write_shards(tmp / "shards", total, args.images, shards)
        train_tokenizer(CAPTIONS * 8, 400, tmp / "tokenizer")
        tokenizer = load_tokenizer(tmp / "tokenizer")
        shard_paths = sorted(str(p) for p in (tmp / "shards").glob("*.tar"))
        server = None
        try:
            if args.source == "http":
                # Each HTTP loader reads the same tars under its own path, so the access log tells
                # who the server served.
                (tmp / "served").mkdir()
                for name in ("baseline", "ours"):
                    (tmp / "served" / name).symlink_to(tmp / "shards", target_is_directory=True)
                server, url = serve(tmp / "served", tmp / "access.log")
                urls = [f"{url}/baseline/{Path(p).name}" for p in shard_paths]
                pattern = f"{url}/ours/image_text-{{000000..{len(urls) - 1:06d}}}.tar"
                loaders = {
                    "baseline": lambda size: baseline_batches(urls, size, args, tokenizer),
                    "ours": lambda size: our_batches(pattern, size, args, tokenizer),
                    "ours_local": lambda size: our_batches(str(tmp / "shards"), size, args, tokenizer),
                }
            else:
                loaders = {
                    "baseline": lambda size: baseline_batches(shard_paths, size, args, tokenizer),
                    "ours": lambda size: our_batches(str(tmp / "shards"), size, args, tokenizer),
                }
            results = measure(loaders, args, server)
        finally:
            if server is not None:
                server.terminate()
                server.wait()
        requests = served_requests(tmp / "access.log", ["baseline", "ours"]) if server is not None else None

    report = {
        "benchmark": "dataload",
        "samples_per_run": args.samples,
        "batch_size": args.batch_size,
        "context_length": args.context_length,
        "shuffle": args.shuffle,
        "source": args.source,
        "source_images": {"width": 1024, "height": 768, "jpeg_quality": 90, "mean_bytes": round(jpeg_bytes)},
        "device": {
            "cpu_model": cpu_model(),
            "usable_cores": len(os.sched_getaffinity(0)),
            # 1-minute load average before and after: other processes on a shared machine show up here.
            "load_average": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "pillow": PIL.__version__,
            "webdataset": importlib.metadata.version("webdataset"),
        },
        "results": results,
    }
    if requests is not None:
        report["server_requests"] = requests  # every run of every setting, per HTTP loader
    emit(report, args.output)


if __name__ == "__main__":
    main()
