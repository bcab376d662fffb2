"""CPU forward latency of mmclip's towers against the reference implementations of the same size.

Batch 1, fp32, ``eval()`` under ``torch.inference_mode()``, random weights on both sides:

* vision: ``EvaVisionTower`` (EVA02-L/14, 224 px) vs timm's ``eva02_large_patch14_clip_224``
  without its classifier head (our tower has none), both returning the CLS embedding;
* text: ``XLMRobertaTextTower`` (rotary) vs transformers' ``XLMRobertaModel`` (XLM-R-large,
  absolute positions, no pooler), both mean-pooled over the attention mask.

Baseline and ours run alternately within one process, so drift in clock speed or background load
hits both. One JSON object goes to stdout (and ``--output``); progress goes to stderr.

    .venv/bin/python bench/forward_cpu.py --output bench/results/forward_cpu.json
    .venv/bin/python bench/forward_cpu.py --tiny   # a smoke run in seconds
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import timm
import torch
import transformers
from report import cpu_model, emit  # bench/report.py: scripts here run with bench/ on sys.path
from torch import nn
from transformers import XLMRobertaConfig, XLMRobertaModel

from mmclip.models import EvaVisionTower, TextConfig, VisionConfig, XLMRobertaTextTower

TOWERS = ("vision", "text")

# Tiny configs keep every code path (RoPE, SwiGLU, sub-LN, masking) at a few thousand parameters.
TINY_VISION = dict(image_size=56, width=64, depth=2, num_heads=4, mlp_hidden_dim=int(64 * 4 * 2 / 3))
TINY_TEXT = dict(vocab_size=1000, hidden_size=64, depth=2, num_heads=4, intermediate_size=256)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--towers", default="vision,text", help="comma-separated subset of: " + ",".join(TOWERS))
    parser.add_argument("--text-lengths", default="77", help="comma-separated token counts, e.g. 77,512")
    parser.add_argument("--warmup", type=int, default=2, help="untimed forwards per model before timing")
    parser.add_argument("--iters", type=int, default=5, help="timed forwards per model")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all usable cores)")
    parser.add_argument("--tiny", action="store_true", help="small configs on both sides, for a smoke run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    args.towers = [t for t in args.towers.split(",") if t]
    unknown = set(args.towers) - set(TOWERS)
    if unknown:
        parser.error(f"--towers: unknown {sorted(unknown)}; choose from {TOWERS}")
    args.text_lengths = [int(n) for n in args.text_lengths.split(",") if n]
    if args.iters < 1 or args.warmup < 0:
        parser.error("--iters must be >= 1 and --warmup >= 0")
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# A pair is (ours, baseline, run_ours, run_baseline); each run_* is one batch-1 forward to a [1, D] embedding.
Pair = tuple[nn.Module, nn.Module, Callable[[], torch.Tensor], Callable[[], torch.Tensor]]


def build_vision(tiny: bool) -> Pair:
    config = VisionConfig(**TINY_VISION) if tiny else VisionConfig()
    ours = EvaVisionTower(config, attention_backend="sdpa")
    overrides = {}
    if tiny:
        overrides = dict(
            img_size=config.image_size, embed_dim=config.width, depth=config.depth, num_heads=config.num_heads
        )
    # num_classes=0 drops timm's 1024 -> 768 CLIP head: both sides then end at the normed CLS token.
    baseline = timm.create_model("eva02_large_patch14_clip_224", pretrained=False, num_classes=0, **overrides)
    pixels = torch.randn(1, 3, config.image_size, config.image_size)
    return ours, baseline, lambda: ours(pixels), lambda: baseline(pixels)


def build_text(tiny: bool, length: int) -> Pair:
    config = TextConfig(**TINY_TEXT) if tiny else TextConfig()
    ours = XLMRobertaTextTower(config, attention_backend="sdpa")
    baseline = XLMRobertaModel(
        XLMRobertaConfig(
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            num_hidden_layers=config.depth,
            num_attention_heads=config.num_heads,
            intermediate_size=config.intermediate_size,
            max_position_embeddings=514,  # XLM-R's 512 positions + the pad offset
            type_vocab_size=1,
            attn_implementation="sdpa",
        ),
        add_pooling_layer=False,
    )
    # Ids above the special tokens (0-3), so no position counts as padding on either side.
    input_ids = torch.randint(4, config.vocab_size, (1, length))
    mask = torch.ones_like(input_ids)

    def run_baseline() -> torch.Tensor:
        hidden = baseline(input_ids=input_ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1)

    return ours, baseline, lambda: ours(input_ids, mask), run_baseline


def time_pair(run_ours: Callable, run_baseline: Callable, warmup: int, iters: int) -> dict[str, list[float]]:
    """Seconds per forward, baseline and ours interleaved; the order flips each round so neither always goes first."""
    times: dict[str, list[float]] = {"ours": [], "baseline": []}
    runs = [("baseline", run_baseline), ("ours", run_ours)]
    for round_index in range(warmup + iters):
        for name, run in runs if round_index % 2 == 0 else runs[::-1]:
            start = time.perf_counter()
            run()
            elapsed = time.perf_counter() - start
            if round_index >= warmup:
                times[name].append(elapsed)
    return times


def compare(name: str, build: Callable[[], Pair], warmup: int, iters: int) -> dict:
    """Build one pair, time it and return its summary; the models are freed when this returns."""
    log(f"[{name}] building models")
    ours, baseline, run_ours, run_baseline = build()
    ours.eval()
    baseline.eval()
    with torch.inference_mode():
        shape_ours, shape_baseline = run_ours().shape, run_baseline().shape
        if shape_ours != shape_baseline:
            raise RuntimeError(f"{name}: output shapes differ, ours {shape_ours} vs baseline {shape_baseline}")
        log(f"[{name}] timing: {warmup} warm-up + {iters} timed forwards each")
        times = time_pair(run_ours, run_baseline, warmup, iters)
    result = {
        "name": name,
        "ours_s_median": statistics.median(times["ours"]),
        "baseline_s_median": statistics.median(times["baseline"]),
        "ours_s_min": min(times["ours"]),
        "baseline_s_min": min(times["baseline"]),
        "speedup": statistics.median(times["baseline"]) / statistics.median(times["ours"]),
        "params_ours": count_params(ours),
        "params_baseline": count_params(baseline),
        "ours_s_all": times["ours"],
        "baseline_s_all": times["baseline"],
    }
    log(
        f"[{name}] ours {result['ours_s_median']:.4f}s, baseline {result['baseline_s_median']:.4f}s "
        f"(median), speedup x{result['speedup']:.2f}"
    )
    return result


def main() -> None:
    args = parse_args()
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    torch.manual_seed(args.seed)

    comparisons: list[tuple[str, Callable[[], Pair]]] = []
    if "vision" in args.towers:
        size = TINY_VISION["image_size"] if args.tiny else VisionConfig().image_size
        comparisons.append((f"vision_{size}px", lambda: build_vision(args.tiny)))
    if "text" in args.towers:
        for length in args.text_lengths:
            comparisons.append((f"text_{length}tok", lambda length=length: build_text(args.tiny, length)))

    results = []
    for name, build in comparisons:
        results.append(compare(name, build, args.warmup, args.iters))
        gc.collect()  # the previous pair's weights (GBs at full size) go before the next pair is built

    report = {
        "benchmark": "forward_cpu",
        "tiny": args.tiny,
        "batch_size": 1,
        "dtype": "float32",
        "warmup": args.warmup,
        "iters": args.iters,
        "device": {
            "processor": platform.processor(),
            "cpu_model": cpu_model(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "timm": timm.__version__,
            "transformers": transformers.__version__,
            "threads": torch.get_num_threads(),
        },
        "comparisons": results,
    }
    emit(report, args.output)


if __name__ == "__main__":
    main()
