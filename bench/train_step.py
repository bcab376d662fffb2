"""The stage-1 training step: mmclip's against open_clip's on the same towers, in one run.

One optimizer step on one device, the same for both sides: a micro-batch of images (224 px) and
captions (77 tokens), bf16 autocast on CUDA (fp32 on CPU), activation checkpointing, the
contrastive loss over the batch (local loss, one process), backward, AdamW.

* mmclip: ``MMCLIP`` from ``configs/model/jina-clip-v2.yaml`` (EVA02-L/14 + Jina-XLM-R), the
  trainer's own step (``mmclip.train.step.ContrastiveStep.whole``: InfoNCE at every Matryoshka dim),
  per attention backend (``mmclip.models.attention``), and also at 384 and 512 px.
* open_clip: ``CLIP`` with open_clip's EVA02-L-14 vision config (timm ``eva02_large_patch14_clip_224``)
  and an HF XLM-R-large text tower built from a local ``XLMRobertaConfig`` (no hub), mean-pooled as
  in open_clip's ``xlm-roberta-large-ViT-H-14``; ``ClipLoss(local_loss=True)``.

Each row: samples/s (image-text pairs), MFU (analytic model FLOPs of ``mmclip.info`` x 3, the same
count for both sides, over the device's dense bf16 peak; None on CPU), peak memory (CUDA only),
for patch dropout 0 and 0.5 and torch.compile off / on. ``--tiny`` swaps in towers of EVA02-tiny
size on both sides for a CPU smoke run. One JSON object goes to stdout (and ``--output``).

    .venv/bin/python bench/train_step.py --output bench/results/train_step_h100.json     # on a GPU
    .venv/bin/python bench/train_step.py --tiny --sizes 224 --compile off --threads 1    # CPU smoke run
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
import tempfile
import time
from pathlib import Path

import open_clip
import torch
from report import emit  # bench/report.py: scripts here run with bench/ on sys.path
from transformers import XLMRobertaConfig

from mmclip import create_model, load_model_config
from mmclip.models import MMCLIP, CLIPConfig
from mmclip.info import TRAIN_FLOPS_PER_FORWARD, text_forward_flops, vision_forward_flops
from mmclip.losses import InfoNCELoss
from mmclip.models.attention import BACKENDS, resolve_backend
from mmclip.train.families.clip import logit_scale
from mmclip.train.step import ContrastiveStep
from mmclip.train.metrics import peak_flops

REPO = Path(__file__).resolve().parents[1]
FULL = REPO / "configs" / "model" / "jina-clip-v2.yaml"
TINY_VISION = ["vision.width=192", "vision.depth=12", "vision.num_heads=3", "vision.mlp_hidden_dim=512"]
TINY_TEXT = ["text.hidden_size=64", "text.depth=2", "text.num_heads=4", "text.intermediate_size=256",
             "text.vocab_size=1000", "text.max_position_embeddings=514"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=None, help="micro-batch per device (default: 128 on CUDA, 4 on CPU)")
    parser.add_argument("--context-length", type=int, default=77)
    parser.add_argument("--backends", default="sdpa,xformers,flash", help=f"mmclip attention backends, of {BACKENDS}")
    parser.add_argument("--patch-dropout", default="0,0.5", help="comma-separated")
    parser.add_argument("--compile", default="off,on", help="torch.compile: off, on or both")
    parser.add_argument("--sizes", default="224,384,512", help="mmclip image sizes (open_clip runs at the first)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per row (compile happens here)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per row")
    parser.add_argument("--no-checkpointing", action="store_true", help="activation checkpointing off on both sides")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--tiny", action="store_true", help="EVA02-tiny-size towers on both sides (CPU smoke run)")
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    args.backends = [b for b in args.backends.split(",") if b]
    args.patch_dropout = [float(p) for p in args.patch_dropout.split(",") if p]
    args.compile = [c == "on" for c in args.compile.split(",") if c]
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    unknown = set(args.backends) - set(BACKENDS)
    if unknown:
        parser.error(f"--backends: unknown {sorted(unknown)}; choose from {BACKENDS}")
    return args


def mmclip_config(args, backend: str, patch_dropout: float) -> CLIPConfig:
    overrides = [f"attention_backend={backend}", f"vision.patch_dropout={patch_dropout}"]
    if args.tiny:
        overrides += TINY_VISION + TINY_TEXT + ["embed_dim=192", "matryoshka_dims=[64,192]", "projections=true"]
    return load_model_config(FULL, overrides)


def mmclip_model(args, image_size: int, backend: str, patch_dropout: float) -> MMCLIP:
    model = create_model(mmclip_config(args, backend, patch_dropout))
    if image_size != model.config.vision.image_size:
        model.vision.set_image_size(image_size)
    model.set_grad_checkpointing(not args.no_checkpointing)
    return model


def open_clip_model(args, patch_dropout: float, text_dir: Path):
    """open_clip's CLIP: its EVA02-L-14 vision config, an XLM-R text tower from a local HF config."""
    if args.tiny:
        XLMRobertaConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=256, max_position_embeddings=514).save_pretrained(text_dir)
    else:  # xlm-roberta-large
        XLMRobertaConfig(vocab_size=250002, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                         intermediate_size=4096, max_position_embeddings=514, pad_token_id=1,
                         layer_norm_eps=1e-5).save_pretrained(text_dir)
    vision_cfg = dict(open_clip.get_model_config("EVA02-L-14")["vision_cfg"], patch_dropout=patch_dropout)
    if args.tiny:
        vision_cfg["timm_model_name"] = "eva02_tiny_patch14_224"
    text_cfg = {"hf_model_name": str(text_dir), "hf_model_pretrained": False, "hf_pooler_type": "mean_pooler",
                "hf_proj_type": "linear", "context_length": args.context_length}
    model = open_clip.CustomTextCLIP(embed_dim=192 if args.tiny else 1024, vision_cfg=vision_cfg, text_cfg=text_cfg,
                                     output_dict=True)
    model.set_grad_checkpointing(not args.no_checkpointing)
    return model


def make_batch(args, image_size: int, vocab: int, device: torch.device) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "keys": [str(i) for i in range(args.batch)],
        "pixel_values": torch.randint(0, 256, (args.batch, 3, image_size, image_size), dtype=torch.uint8,
                                      generator=generator).to(device),
        "input_ids": torch.randint(5, vocab, (args.batch, args.context_length), generator=generator).to(device),
        "attention_mask": torch.ones(args.batch, args.context_length, dtype=torch.long).to(device),
    }


def mmclip_step(model, batch, device, dtype, compiled: bool):
    loss_fn = InfoNCELoss(list(model.config.matryoshka_dims))
    forward = torch.compile(model) if compiled else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    step_losses = ContrastiveStep(forward, lambda kind: logit_scale(model, kind), {"image_text": "image_text"}, loss_fn,
                                  {}, torch.float32, device, lambda loss, last: loss.backward())

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            step_losses.whole({"image_text": batch})
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def open_clip_step(model, batch, device, dtype, compiled: bool):
    loss_fn = open_clip.ClipLoss(local_loss=True, gather_with_grad=True)
    forward = torch.compile(model) if compiled else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN, device=device).view(3, 1, 1) * 255
    std = torch.tensor(open_clip.OPENAI_DATASET_STD, device=device).view(3, 1, 1) * 255

    def step() -> None:
        images = (batch["pixel_values"].float() - mean) / std
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            out = forward(images, batch["input_ids"])
            loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def time_steps(step, args, device) -> tuple[float, float | None]:
    """Seconds per step (median of ``--steps``) and peak memory in GB (CUDA)."""
    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
    return sorted(times)[len(times) // 2], peak


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    args.batch = args.batch or (128 if device.type == "cuda" else 4)
    peak_device = peak_flops(device)
    rows = []

    def measure(impl, build, make_step, image_size, extra):
        model = build().to(device).train()
        config = mmclip_config(args, "sdpa", extra["patch_dropout"])  # both sides' FLOPs: the same towers
        batch = make_batch(args, image_size, config.text.vocab_size, device)
        seconds, memory = time_steps(make_step(model, batch, device, dtype, extra["compile"]), args, device)
        flops = args.batch * TRAIN_FLOPS_PER_FORWARD * (
            vision_forward_flops(config.vision, image_size, extra["patch_dropout"])
            + text_forward_flops(config.text, args.context_length))
        row = {"impl": impl, "image_size": image_size, **extra, "step_s": seconds,
               "samples_per_s": args.batch / seconds, "tflops": flops / seconds / 1e12,
               "mfu": flops / seconds / peak_device if peak_device else None, "peak_memory_gb": memory}
        print(f"{row}", file=sys.stderr)
        rows.append(row)
        del model, batch
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    with tempfile.TemporaryDirectory() as text_dir:
        for compiled in args.compile:
            for patch_dropout in args.patch_dropout:
                base = {"patch_dropout": patch_dropout, "compile": compiled}
                measure("open_clip", lambda: open_clip_model(args, patch_dropout, Path(text_dir)), open_clip_step,
                        args.sizes[0], {"attention": "timm/hf sdpa", **base})
                for backend in args.backends:
                    if resolve_backend(backend, device) != backend:
                        rows.append({"impl": "mmclip", "attention": backend, **base, "unavailable": True})
                        continue
                    for size in args.sizes:
                        measure("mmclip", lambda: mmclip_model(args, size, backend, patch_dropout), mmclip_step,
                                size, {"attention": backend, **base})

    baseline = {(r["patch_dropout"], r["compile"]): r for r in rows if r["impl"] == "open_clip"}
    speedups = [
        {"attention": r["attention"], "patch_dropout": r["patch_dropout"], "compile": r["compile"],
         "mmclip_over_open_clip": r["samples_per_s"] / baseline[(r["patch_dropout"], r["compile"])]["samples_per_s"]}
        for r in rows
        if r["impl"] == "mmclip" and "samples_per_s" in r and r["image_size"] == args.sizes[0]
    ]
    emit({
        "benchmark": "train_step",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
        "models": "tiny (EVA02-tiny size)" if args.tiny else "EVA02-L/14 + XLM-R-large",
        "precision": "bf16 autocast" if dtype == torch.bfloat16 else "fp32",
        "micro_batch": args.batch, "context_length": args.context_length,
        "activation_checkpointing": not args.no_checkpointing,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "torch": torch.__version__, "open_clip": open_clip.__version__,
        "dense_bf16_peak_tflops": peak_device / 1e12 if peak_device else None,
        "rows": rows, "speedup_at_first_size": speedups,
    }, args.output)


if __name__ == "__main__":
    main()
