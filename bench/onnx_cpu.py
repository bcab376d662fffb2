"""CPU latency of an export's ONNX towers (fp32 and int8) against its torch model, on the same
batch in one run, with their agreement and the held-out retrieval each gives.

Needs an export written with ``mmclip export CHECKPOINT --output DIR --onnx-int8``. For each tower
the same inputs go to torch (``AutoModel``, fp32, ``inference_mode``) and to onnxruntime (CPU
provider, fp32 graph and int8 dynamic-quantized graph), alternating, ``--warmup`` untimed and
``--iters`` timed runs each; medians are reported. The batch is the first ``--batch`` held-out
images and their captions, texts padded to ``--text-length`` tokens.

Held-out retrieval: every image and its first caption of each clip_benchmark annotation file
under ``--eval-data``, embedded by all three; recall@5 text -> image and image -> text per
language (``mmclip.train.validation``'s rank metrics: one relevant item per query), and the int8
change against torch. One JSON object goes to stdout (and ``--output``).

    .venv/bin/mmclip export runs/demo/runs/stage3/checkpoints/step_000100 --output /tmp/demo-onnx --onnx-int8
    .venv/bin/python bench/onnx_cpu.py --model /tmp/demo-onnx --eval-data runs/demo/data/eval/clip_benchmark \
        --output bench/results/onnx_cpu.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from PIL import Image
from report import emit, processor  # bench/report.py: scripts here run with bench/ on sys.path

from mmclip.export_onnx import OnnxEncoder
from eval.retrieval import find_annotation_files, read_annotations
from mmclip.search import load_model
from mmclip.train.validation import positive_ranks, ranking_metrics

VARIANTS = ("torch", "onnx", "onnx_int8")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="export directory with onnx/*.onnx and *_int8.onnx")
    parser.add_argument("--eval-data", type=Path, required=True, help="clip_benchmark annotation files and images")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--text-length", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads for torch and onnxruntime")
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON here")
    return parser.parse_args()


def held_out(root: Path) -> dict[str, tuple[list[Path], list[str]]]:
    """Per language: image paths and each image's first caption."""
    sets = {}
    for lang, path in find_annotation_files(root).items():
        items = read_annotations(path)
        sets[lang] = ([path.parent / image for image, _ in items], [captions[0] for _, captions in items])
    return sets


def timed(run, warmup: int, iters: int) -> list[float]:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model = load_model(args.model)
    encoders = {"onnx": OnnxEncoder(args.model, threads=args.threads),
                "onnx_int8": OnnxEncoder(args.model, int8=True, threads=args.threads)}
    sets = held_out(args.eval_data)

    def embed(variant: str, pixels: np.ndarray | None, ids: np.ndarray | None, mask: np.ndarray | None) -> np.ndarray:
        if variant == "torch":
            with torch.inference_mode():
                if pixels is not None:
                    return model.get_image_features(torch.from_numpy(pixels)).numpy()
                return model.get_text_features(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        encoder = encoders[variant]
        return encoder.run_vision(pixels) if pixels is not None else encoder.run_text(ids, mask)

    def pixels_of(paths) -> np.ndarray:
        return model.image_processor([Image.open(p).convert("RGB") for p in paths])["pixel_values"].numpy()

    def tokens_of(texts, padding="longest") -> tuple[np.ndarray, np.ndarray]:
        tokens = model.tokenizer(texts, padding=padding, truncation=True, max_length=args.text_length,
                                 return_tensors="np", return_token_type_ids=False)
        return tokens["input_ids"].astype(np.int64), tokens["attention_mask"].astype(np.int64)

    # Latency: one batch of held-out inputs, every variant on the same arrays, alternating.
    images = [p for paths, _ in sets.values() for p in paths][: args.batch]
    captions = [c for _, texts in sets.values() for c in texts][: args.batch]
    pixels = pixels_of(images)
    ids, mask = tokens_of(captions, padding="max_length")
    latency = {}
    for tower, inputs in (("vision", (pixels, None, None)), ("text", (None, ids, mask))):
        times = {variant: [] for variant in VARIANTS}
        for _ in range(args.iters):
            for variant in VARIANTS:
                times[variant] += timed(lambda v=variant: embed(v, *inputs), args.warmup if not times[variant] else 0, 1)
        medians = {variant: statistics.median(values) for variant, values in times.items()}
        latency[tower] = {
            "batch": len(images) if tower == "vision" else len(captions),
            **{f"{variant}_s_median": value for variant, value in medians.items()},
            "speedup_onnx": medians["torch"] / medians["onnx"],
            "speedup_onnx_int8": medians["torch"] / medians["onnx_int8"],
        }

    # Agreement and held-out retrieval: every image and caption of every language.
    recall, agreement = {}, {variant: [] for variant in VARIANTS[1:]}
    for lang, (paths, texts) in sets.items():
        lang_pixels, (lang_ids, lang_mask) = pixels_of(paths), tokens_of(texts)
        embeds = {}
        for variant in VARIANTS:
            image = embed(variant, lang_pixels, None, None)
            text = embed(variant, None, lang_ids, lang_mask)
            embeds[variant] = [e / np.linalg.norm(e, axis=-1, keepdims=True) for e in (image, text)]
        recall[lang] = {}
        for variant, (image, text) in embeds.items():
            scores = torch.from_numpy(text @ image.T)
            recall[lang][variant] = {
                **ranking_metrics(positive_ranks(scores), [5], None, "t2i_"),
                **ranking_metrics(positive_ranks(scores.T.contiguous()), [5], None, "i2t_"),
            }
            if variant != "torch":
                reference = embeds["torch"]
                agreement[variant] += [float((a * b).sum(-1).min()) for a, b in zip((image, text), reference)]
    mean = {variant: {key: float(np.mean([recall[lang][variant][key] for lang in recall]))
                      for key in ("t2i_recall@5", "i2t_recall@5")} for variant in VARIANTS}
    report = {
        "device": {
            "processor": processor(),
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "threads": args.threads or torch.get_num_threads(),
        },
        "model": str(args.model),
        "text_length": args.text_length,
        "latency": latency,
        "min_cosine_vs_torch": {variant: min(values) for variant, values in agreement.items()},
        "recall@5_mean": mean,
        "int8_recall@5_change": {key: mean["onnx_int8"][key] - mean["torch"][key] for key in mean["torch"]},
        "recall@5_per_language": recall,
    }
    emit(report, args.output)


if __name__ == "__main__":
    main()
