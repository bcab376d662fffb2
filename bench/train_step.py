"""The stage-1 training step: mmclip's against open_clip's on the same towers, in one run.

One optimizer step on one device, the same work on both sides: a micro-batch of images (224 px) and
captions (77-token context), bf16 autocast on CUDA (fp32 on CPU), activation checkpointing, the
contrastive loss over the batch (local loss, one process), backward; then AdamW, each side's own: the
trainer's fused one for mmclip (``mmclip.train.optim.adamw``), torch's default one for open_clip, as
``open_clip_train.main`` builds it (a loop over the tensors on CPU, ``foreach`` on CUDA);
``--optimizer fused`` gives open_clip the fused one too, so that the ratio is the towers' and the loss's alone.

* mmclip: ``MMCLIP`` from ``configs/model/jina-clip-v2.yaml`` (EVA02-L/14 + Jina-XLM-R), the
  trainer's own step (``mmclip.train.step.ContrastiveStep.whole``: InfoNCE at every Matryoshka dim),
  per attention backend (``mmclip.models.attention``), and also at 384 and 512 px; compiled as the
  trainer compiles it (``clip.compile: true``, ``mmclip.train.compile.compile_towers``).
* open_clip: ``CLIP`` with open_clip's EVA02-L-14 vision config (timm ``eva02_large_patch14_clip_224``)
  and an HF XLM-R-large text tower built from a local ``XLMRobertaConfig`` (no hub), mean-pooled as
  in open_clip's ``xlm-roberta-large-ViT-H-14``; ``ClipLoss(local_loss=True)``; compiled as open_clip's
  ``--torchcompile`` does (``torch.compile(model)``).

Captions (``--captions``): ``realistic`` gives the captions the lengths of a log-normal around 20
tokens (its quantiles, clipped to [4, context]), as web captions are; each side gets the batch its
own tokenizer call produces: open_clip pads every caption to the context (its ``HFTokenizer``),
mmclip to the batch's longest (``mmclip.tokenizer.tokenize``). ``full``: every caption fills the
context, no padding.

Each row: samples/s (image-text pairs), MFU (analytic model FLOPs of ``mmclip.info`` x 3 over the
real tokens, the same count for both sides, over the device's dense bf16 peak; None on CPU), peak
memory (CUDA only), for patch dropout 0 and 0.5, torch.compile off / on, both caption kinds.
On a CPU the rows of one setting are built together and take turns step by step, so that the
machine's drift reaches every side alike. ``--size tiny`` / ``base`` swap in EVA02-tiny-size /
EVA02-B/16 + XLM-R-base towers on both sides (CPU runs). One JSON object goes to stdout (and
``--output``).

    .venv/bin/python bench/train_step.py --output bench/results/train_step_h100.json     # on a GPU
    .venv/bin/python bench/train_step.py --size tiny --sizes 224 --threads 1             # CPU run
"""

from __future__ import annotations

import argparse
import functools
import gc
import sys
import tempfile
import time
from pathlib import Path

import open_clip
import timm
import torch
from report import describe_device, emit  # bench/report.py: scripts here run with bench/ on sys.path
from transformers import XLMRobertaConfig

from mmclip import create_model, load_model_config
from mmclip.models import MMCLIP, CLIPConfig
from mmclip.info import TRAIN_FLOPS_PER_FORWARD, text_forward_flops, vision_forward_flops
from mmclip.losses import InfoNCELoss
from mmclip.models.attention import BACKENDS, resolve_backend
from mmclip.train.compile import compile_towers
from mmclip.train.optim import adamw
from mmclip.train.families.clip import logit_scale
from mmclip.train.step import ContrastiveStep
from mmclip.train.metrics import peak_flops

REPO = Path(__file__).resolve().parents[1]
FULL = REPO / "configs" / "model" / "jina-clip-v2.yaml"
# Both sides' towers per --size: mmclip overrides of the full config, and open_clip's vision tower.
# tiny: timm's EVA02-tiny with the EVA-CLIP sub-LayerNorms and split q/k/v of eva02_large_patch14_clip_224,
# the same blocks as ours; its 2-layer 64-wide text tower is a smoke size.
SIZES = {
    "tiny": {
        "mmclip": ["vision.width=192", "vision.depth=12", "vision.num_heads=3", "vision.mlp_hidden_dim=512",
                   "text.hidden_size=64", "text.depth=2", "text.num_heads=4", "text.intermediate_size=256",
                   "text.vocab_size=1000", "text.max_position_embeddings=514",
                   "embed_dim=192", "matryoshka_dims=[64,192]", "projections=true"],
        "timm": ("eva02_tiny_patch14_224", {"qkv_fused": False, "scale_mlp": True, "scale_attn_inner": True}),
        "xlmr": {"vocab_size": 1000, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "intermediate_size": 256},
        "embed_dim": 192,
    },
    "base": {  # EVA02-B/16 + XLM-R-base
        "mmclip": ["vision.width=768", "vision.depth=12", "vision.num_heads=12", "vision.patch_size=16",
                   "vision.mlp_hidden_dim=2048", "text.hidden_size=768", "text.depth=12", "text.num_heads=12",
                   "text.intermediate_size=3072", "embed_dim=512", "matryoshka_dims=[64,128,256,512]",
                   "projections=true"],
        "timm": ("eva02_base_patch16_clip_224", {}),
        "xlmr": {"vocab_size": 250002, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                 "intermediate_size": 3072},
        "embed_dim": 512,
    },
    "full": {  # EVA02-L/14 + XLM-R-large, jina-clip-v2
        "mmclip": [],
        "timm": ("eva02_large_patch14_clip_224", {}),
        "xlmr": {"vocab_size": 250002, "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                 "intermediate_size": 4096},
        "embed_dim": 1024,
    },
}
CAPTIONS = ("realistic", "full")
CAPTION_MEDIAN_TOKENS, CAPTION_SIGMA = 20, 0.45  # log-normal: ~95% of captions between 8 and 48 tokens


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=None, help="micro-batch per device (default: 128 on CUDA, 4 on CPU)")
    parser.add_argument("--context-length", type=int, default=77)
    parser.add_argument("--backends", default="sdpa,xformers,flash", help=f"mmclip attention backends, of {BACKENDS}")
    parser.add_argument("--patch-dropout", default="0,0.5", help="comma-separated")
    parser.add_argument("--compile", default="off,on", help="torch.compile: off, on or both")
    parser.add_argument("--captions", default=",".join(CAPTIONS), help=f"caption lengths, of {CAPTIONS}")
    parser.add_argument("--sizes", default="224,384,512", help="mmclip image sizes (open_clip runs at the first)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per row (compile happens here)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per row")
    parser.add_argument("--optimizer", choices=("own", "fused"), default="own",
                        help="own: each side's AdamW (mmclip's fused, open_clip's torch default); fused: both fused")
    parser.add_argument("--no-checkpointing", action="store_true", help="activation checkpointing off on both sides")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--profile", action="store_true",
                        help="also count one step's aten ops (robust where wall time is contended)")
    parser.add_argument("--size", choices=tuple(SIZES), default="full", help="towers on both sides (default full)")
    parser.add_argument("--tiny", action="store_true", help="the same as --size tiny")
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    args.backends = [b for b in args.backends.split(",") if b]
    args.patch_dropout = [float(p) for p in args.patch_dropout.split(",") if p]
    args.compile = [c == "on" for c in args.compile.split(",") if c]
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    args.captions = [c for c in args.captions.split(",") if c]
    args.size = "tiny" if args.tiny else args.size
    unknown = set(args.backends) - set(BACKENDS)
    if unknown:
        parser.error(f"--backends: unknown {sorted(unknown)}; choose from {BACKENDS}")
    if set(args.captions) - set(CAPTIONS):
        parser.error(f"--captions: unknown {sorted(set(args.captions) - set(CAPTIONS))}; choose from {CAPTIONS}")
    return args


def mmclip_config(args, backend: str, patch_dropout: float) -> CLIPConfig:
    overrides = [f"attention_backend={backend}", f"vision.patch_dropout={patch_dropout}"]
    return load_model_config(FULL, overrides + SIZES[args.size]["mmclip"])


def mmclip_model(args, image_size: int, backend: str, patch_dropout: float) -> MMCLIP:
    model = create_model(mmclip_config(args, backend, patch_dropout))
    if image_size != model.config.vision.image_size:
        model.vision.set_image_size(image_size)
    model.set_grad_checkpointing(not args.no_checkpointing)
    return model


def open_clip_model(args, patch_dropout: float, text_dir: Path):
    """open_clip's CLIP: timm's EVA02 vision tower, an XLM-R text tower from a local HF config."""
    size = SIZES[args.size]
    XLMRobertaConfig(**size["xlmr"], max_position_embeddings=514, pad_token_id=1,
                     layer_norm_eps=1e-5).save_pretrained(text_dir)
    timm_name, timm_flags = size["timm"]
    vision_cfg = dict(open_clip.get_model_config("EVA02-L-14")["vision_cfg"], timm_model_name=timm_name,
                      patch_dropout=patch_dropout)
    text_cfg = {"hf_model_name": str(text_dir), "hf_model_pretrained": False, "hf_pooler_type": "mean_pooler",
                "hf_proj_type": "linear", "context_length": args.context_length}
    model = open_clip.CustomTextCLIP(embed_dim=size["embed_dim"], vision_cfg=vision_cfg, text_cfg=text_cfg,
                                     output_dict=True)
    if timm_flags:  # open_clip passes no extra timm arguments: the same trunk as its TimmModel builds, with them
        model.visual.trunk = timm.create_model(timm_name, num_classes=size["embed_dim"], global_pool="token",
                                               patch_drop_rate=patch_dropout, **timm_flags)
    model.set_grad_checkpointing(not args.no_checkpointing)
    return model


def caption_lengths(args) -> torch.Tensor:
    """Per caption: the context (``full``), or the log-normal's quantiles at (i + 0.5) / batch, so that
    even a batch of 4 has the distribution's mean and spread rather than one random draw's."""
    if args.caption_kind == "full":
        return torch.full((args.batch,), args.context_length)
    quantiles = (torch.arange(args.batch, dtype=torch.float64) + 0.5) / args.batch
    normal = torch.distributions.Normal(0.0, CAPTION_SIGMA).icdf(quantiles)
    lengths = (normal.exp() * CAPTION_MEDIAN_TOKENS).round().long()
    order = torch.randperm(args.batch, generator=torch.Generator().manual_seed(0))  # not sorted by length
    return lengths.clamp(4, args.context_length)[order]


def make_batch(args, image_size: int, vocab: int, device: torch.device, impl: str) -> dict[str, torch.Tensor]:
    """The same images and tokens for both sides; the padding each side's tokenizer gives them."""
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (args.batch, 3, image_size, image_size), dtype=torch.uint8, generator=generator)
    ids = torch.randint(5, vocab, (args.batch, args.context_length), generator=generator)
    lengths = caption_lengths(args)
    mask = torch.arange(args.context_length)[None, :] < lengths[:, None]
    ids = ids.masked_fill(~mask, 1)  # XLM-R's pad id on both sides
    if impl == "mmclip":  # padded to the batch's longest caption
        ids, mask = ids[:, :int(lengths.max())], mask[:, :int(lengths.max())]
    return {"keys": [str(i) for i in range(args.batch)], "pixel_values": pixels.to(device),
            "input_ids": ids.to(device), "attention_mask": mask.long().to(device)}


def mmclip_step(model, batch, device, dtype, compiled: bool):
    loss_fn = InfoNCELoss(list(model.config.matryoshka_dims))
    if compiled:
        compile_towers(model)
    forward = model
    optimizer = adamw(model.parameters(), lr=1e-5)
    step_losses = ContrastiveStep(forward, lambda kind: logit_scale(model, kind), {"image_text": "image_text"}, loss_fn,
                                  {}, torch.float32, device, lambda loss, last: loss.backward())

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            step_losses.whole({"image_text": batch})
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def open_clip_step(model, batch, device, dtype, compiled: bool, fused_adamw: bool = False):
    loss_fn = open_clip.ClipLoss(local_loss=True, gather_with_grad=True)
    forward = torch.compile(model) if compiled else model
    optimizer = adamw(model.parameters(), lr=1e-5) if fused_adamw else torch.optim.AdamW(model.parameters(), lr=1e-5)
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


def count_ops(step) -> dict[str, int]:
    """aten ops of one step under torch.profiler: all, matmuls, and elementwise/copy traffic ops."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        step()
    counts = {e.key: e.count for e in profile.key_averages() if e.key.startswith("aten::")}
    groups = {"matmul": ("mm", "addmm", "bmm"), "elementwise": ("mul", "add", "neg", "sub", "div"),
              "copy": ("copy_", "cat", "stack", "clone", "contiguous")}
    out = {"aten_ops": sum(counts.values())}
    for name, ops in groups.items():
        out[f"{name}_ops"] = sum(counts.get(f"aten::{op}", 0) for op in ops)
    return out


def time_interleaved(steps: list, args, device) -> list[tuple[float, float | None]]:
    """Seconds per step (median of ``--steps``) and peak memory in GB (CUDA) of each of ``steps``.

    The steps take turns (A B A B ...), so that a machine whose speed drifts (a shared or throttled
    CPU) slows every side alike instead of whichever ran last.
    """
    for step in steps:
        for _ in range(args.warmup):
            step()
    times = [[] for _ in steps]
    peaks = [0.0 for _ in steps]
    for _ in range(args.steps):
        for i, step in enumerate(steps):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                peaks[i] = max(peaks[i], torch.cuda.max_memory_allocated(device) / 1e9)
            times[i].append(time.perf_counter() - start)
    return [(sorted(t)[len(t) // 2], peak if device.type == "cuda" else None) for t, peak in zip(times, peaks)]


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    args.batch = args.batch or (128 if device.type == "cuda" else 4)
    peak_device = peak_flops(device)
    rows = []

    def measure(candidates: list[tuple]) -> None:
        """Time every (impl, build, make_step, image_size, extra) of one setting: on a CPU all built at
        once and timed in turns; on a GPU one at a time, so that each row's peak memory is its own."""
        for group in [candidates] if device.type == "cpu" else [[c] for c in candidates]:
            measure_together(group)

    def measure_together(candidates: list[tuple]) -> None:
        prepared = []
        for impl, build, make_step, image_size, extra in candidates:
            model = build().to(device).train()
            config = mmclip_config(args, "sdpa", extra["patch_dropout"])  # both sides' FLOPs: the same towers
            batch = make_batch(args, image_size, config.text.vocab_size, device, impl)
            step = make_step(model, batch, device, dtype, extra["compile"])
            prepared.append((impl, image_size, extra, config, batch, model, step))
        timings = time_interleaved([p[-1] for p in prepared], args, device)
        for (impl, image_size, extra, config, batch, model, step), (seconds, memory) in zip(prepared, timings):
            real_tokens = batch["attention_mask"].sum(dim=1).tolist()
            flops = TRAIN_FLOPS_PER_FORWARD * (
                args.batch * vision_forward_flops(config.vision, image_size, extra["patch_dropout"])
                + sum(text_forward_flops(config.text, n) for n in real_tokens))
            row = {"impl": impl, "image_size": image_size, **extra,
                   "caption_tokens_mean": sum(real_tokens) / args.batch,
                   "text_batch_shape": list(batch["input_ids"].shape), "step_s": seconds,
                   "samples_per_s": args.batch / seconds, "tflops": flops / seconds / 1e12,
                   "mfu": flops / seconds / peak_device if peak_device else None, "peak_memory_gb": memory}
            if args.profile:
                row.update(count_ops(step))
            print(f"{row}", file=sys.stderr)
            rows.append(row)
        del prepared
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    with tempfile.TemporaryDirectory() as text_dir:
        for compiled in args.compile:
            for captions in args.captions:
                args.caption_kind = captions
                for patch_dropout in args.patch_dropout:
                    base = {"patch_dropout": patch_dropout, "compile": compiled, "captions": captions}
                    candidates = [("open_clip", lambda: open_clip_model(args, patch_dropout, Path(text_dir)),
                                   functools.partial(open_clip_step, fused_adamw=args.optimizer == "fused"),
                                   args.sizes[0], {"attention": "timm/hf sdpa", **base})]
                    for backend in args.backends:
                        if resolve_backend(backend, device) != backend:
                            rows.append({"impl": "mmclip", "attention": backend, **base, "unavailable": True})
                            continue
                        for size in args.sizes:
                            candidates.append(("mmclip", lambda size=size, backend=backend: mmclip_model(
                                args, size, backend, patch_dropout), mmclip_step, size, {"attention": backend, **base}))
                    measure(candidates)

    setting = ("patch_dropout", "compile", "captions")
    baseline = {tuple(r[k] for k in setting): r for r in rows if r["impl"] == "open_clip"}
    speedups = [
        {"attention": r["attention"], **{k: r[k] for k in setting},
         "mmclip_over_open_clip": r["samples_per_s"] / baseline[tuple(r[k] for k in setting)]["samples_per_s"]}
        for r in rows
        if r["impl"] == "mmclip" and "samples_per_s" in r and r["image_size"] == args.sizes[0]
    ]
    models = {"tiny": "tiny (EVA02-tiny size, 2-layer text)", "base": "EVA02-B/16 + XLM-R-base",
              "full": "EVA02-L/14 + XLM-R-large"}
    emit({
        "benchmark": "train_step",
        "device": describe_device(device),
        "models": models[args.size],
        "precision": "bf16 autocast" if dtype == torch.bfloat16 else "fp32",
        "micro_batch": args.batch, "context_length": args.context_length,
        "caption_lengths": {"realistic": f"log-normal, median {CAPTION_MEDIAN_TOKENS}, sigma {CAPTION_SIGMA}, "
                                         f"clipped to [4, {args.context_length}]", "full": "every token real"},
        "activation_checkpointing": not args.no_checkpointing,
        "optimizer": {"own": "mmclip: fused AdamW; open_clip: torch's default AdamW",
                      "fused": "fused AdamW on both sides"}[args.optimizer],
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "torch": torch.__version__, "open_clip": open_clip.__version__,
        "dense_bf16_peak_tflops": peak_device / 1e12 if peak_device else None,
        "rows": rows, "speedup_at_first_size": speedups,
    }, args.output)


if __name__ == "__main__":
    main()
