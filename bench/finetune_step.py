"""``mmclip finetune``'s training step: GradCache with a frozen vision tower, its images embedded
once against twice, in one run.

The towers as ``mmclip finetune`` trains jina-clip-v2 (``--vision`` lock:0 on a model without
projections, ``--text lora``): nothing of the vision side trains, the text tower trains LoRA
adapters, and the batch is embedded in GradCache chunks (``grad_cache_chunk``). The baseline is
GradCache as Gao et al. run it, every chunk through both towers in step 1 and again in step 3
(``ContrastiveStep(fixed_images=False)``); mmclip's step embeds the images once
(``fixed_images=True``, what the CLIP family sets for such towers). Same model, same batch, the two
steps taking turns; fp32 on CPU, bf16 autocast on CUDA, activation checkpointing on.

    .venv/bin/python bench/finetune_step.py --size tiny --threads 1          # CPU
    .venv/bin/python bench/finetune_step.py --output bench/results/finetune_step_h100.json   # a GPU
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from report import describe_device, emit  # bench/report.py: scripts here run with bench/ on sys.path
from train_step import SIZES, make_batch, mmclip_model, time_interleaved

from mmclip.losses import InfoNCELoss
from mmclip.train.config import TowersConfig, TowerTraining
from mmclip.train.families.clip import logit_scale
from mmclip.train.step import ContrastiveStep
from mmclip.train.trainable import apply_towers


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=tuple(SIZES), default="full", help="towers (default full: jina-clip-v2)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=None, help="per device (default: 256 on CUDA, 8 on CPU)")
    parser.add_argument("--chunk", type=int, default=None, help="GradCache chunk (default: a quarter of the batch)")
    parser.add_argument("--context-length", type=int, default=77)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per side")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    args.caption_kind, args.no_checkpointing = "realistic", False  # what train_step's builders read
    return args


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    args.batch = args.batch or (256 if device.type == "cuda" else 8)
    chunk = args.chunk or max(1, args.batch // 4)

    model = mmclip_model(args, args.image_size, "auto", 0.0)
    apply_towers(model, TowersConfig(vision=TowerTraining("frozen"), text=TowerTraining("lora")))
    model = model.to(device).train()
    batch = make_batch(args, args.image_size, model.config.text.vocab_size, device, "mmclip")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    loss_fn = InfoNCELoss(list(model.config.matryoshka_dims))

    def make_step(fixed_images: bool):
        step = ContrastiveStep(model, lambda kind: logit_scale(model, kind), {"image_text": "image_text"}, loss_fn, {},
                               torch.float32, device, lambda loss, last: loss.backward(), fixed_images)

        def run() -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                step.grad_cache({"image_text": batch}, {"image_text": chunk})
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return run

    sides = {"vision twice (GradCache)": make_step(False), "vision once (mmclip)": make_step(True)}
    timings = time_interleaved(list(sides.values()), args, device)
    rows = [{"step": name, "step_s": seconds, "samples_per_s": args.batch / seconds, "peak_memory_gb": memory}
            for name, (seconds, memory) in zip(sides, timings)]
    emit({
        "benchmark": "finetune_step",
        "device": describe_device(device),
        "size": args.size, "image_size": args.image_size, "batch": args.batch, "grad_cache_chunk": chunk,
        "towers": {"vision": "frozen", "text": "lora"}, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "rows": rows,
        "speedup": rows[0]["step_s"] / rows[1]["step_s"],
    }, args.output)


if __name__ == "__main__":
    main()
