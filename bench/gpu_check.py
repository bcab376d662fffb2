"""The prepared GPU check (run through ``bench/gpu_check.sh``): one pass over what only a GPU can show.

Sections, each recorded in the JSON whether it passes, fails (its error kept) or runs out of time:

1. ``attention``: sdpa / flash / xformers / torch varlen on the same bf16 q, k, v (padded batch and
   packed sequences) against an fp32 softmax reference.
2. ``train_step``: ``bench/train_step.py`` at full size (EVA02-L/14 + XLM-R-large), stage-1 patch
   dropout, realistic (padded) captions, eager (every backend) and compiled (sdpa): mmclip / open_clip
   ratio, MFU, peak memory, and ``mmclip info --memory``'s estimate for the same batch.
3. ``deepspeed_run``: ``mmclip train configs/stage1_1gpu.yaml`` (DeepSpeed ZeRO-1, bf16) on real
   WebDataset shards of the synthetic corpus (generated beside section 2), stopped by SIGUSR1 after
   ``--run-seconds`` of steps: the trainer's own checkpoint, then its samples/s and MFU from the log.
4. ``encode_image``: that checkpoint exported to a Hugging Face directory, loaded with
   ``AutoModel.from_pretrained(..., trust_remote_code=True)``, ``encode_image`` images/s at 224 px.
5. ``finetune_step``: ``bench/finetune_step.py`` at full size and 512 px, ``mmclip finetune``'s
   towers (vision frozen, text LoRA) under GradCache: images embedded once against twice.

``--cpu-dry-run`` runs the same path on the CPU at tiny size in about a minute (the test suite does),
so that the script cannot rot before a GPU is available. Output: ``bench/results/gpu_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
from report import describe_device  # bench/report.py: scripts here run with bench/ on sys.path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-dry-run", action="store_true", help="the same sections on CPU at tiny size")
    parser.add_argument("--output", type=Path, default=None, help="default: bench/results/gpu_<device>.json")
    parser.add_argument("--batch", type=int, default=128, help="train_step micro-batch on the GPU")
    parser.add_argument("--run-seconds", type=float, default=None,
                        help="DeepSpeed run length after its first step (default 120; dry run 3)")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds: sections that would start later are skipped")
    args = parser.parse_args()
    if args.run_seconds is None:
        args.run_seconds = 3.0 if args.cpu_dry_run else 120.0
    return args


def device_name(device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def run_json(command: list[str], timeout: float, env: dict | None = None) -> dict:
    """A bench script's JSON report (stdout); its stderr tail in the error when it fails."""
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} exited {result.returncode}: {result.stderr[-2000:]}")
    return json.loads(result.stdout)


# --- 1. attention backends ----------------------------------------------------------------------


def check_attention(device: torch.device) -> dict:
    from mmclip.models.attention import attention, resolve_backend, varlen_attention

    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    lengths = [77, 40, 13, 1]
    q, k, v = (torch.randn(len(lengths), 77, 16, 64, device=device) for _ in range(3))
    mask = torch.arange(77, device=device)[None] < torch.tensor(lengths, device=device)[:, None]
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(64)
    reference = torch.einsum("bhqk,bkhd->bqhd", scores.masked_fill(~mask[:, None, None], -math.inf).softmax(-1), v)
    cu_seqlens = torch.nn.functional.pad(torch.tensor(lengths, device=device).cumsum(0, dtype=torch.int32), (1, 0))
    low = [t.to(dtype) for t in (q, k, v)]
    rows = {}
    for backend in ("sdpa", "flash", "xformers"):
        if resolve_backend(backend, device) != backend:
            rows[backend] = {"unavailable": True}
            continue
        row = {}
        if backend != "flash":  # flash_attn_func takes no padding mask: the packed form below is its path
            padded = attention(*low, backend=backend, key_padding_mask=mask).float()
            row["padded_max_abs_err"] = (padded - reference)[mask].abs().max().item()
        packed = varlen_attention(*(t[mask] for t in low), cu_seqlens=cu_seqlens, max_seqlen=max(lengths),
                                  backend=backend).float()
        row["packed_max_abs_err"] = (packed - reference[mask]).abs().max().item()
        rows[backend] = row
    tolerance = 2e-2 if dtype == torch.bfloat16 else 1e-4
    errors = [e for row in rows.values() for key, e in row.items() if key.endswith("err")]
    return {"dtype": str(dtype), "tolerance": tolerance, "backends": rows, "ok": max(errors) <= tolerance,
            "note": "sdpa's packed path is torch varlen_attn on CUDA in bf16, a block-diagonal mask elsewhere"}


# --- 2. the training step against open_clip's ------------------------------------------------------


def memory_estimate(batch: int, patch_dropout: float, checkpointing: bool) -> float:
    """``mmclip info --memory``'s peak for one image-text micro-batch of ``batch`` on one GPU."""
    from mmclip.config import load_config
    from mmclip.factory import load_model_config
    from mmclip.train.config import TrainConfig
    from mmclip.train.memory import estimate_memory

    stream = {"image_text": {"kind": "image_text", "shards": ["unused"], "batch_size": batch}}
    overrides = [f"data.streams={json.dumps(stream)}", "grad_cache_chunk={}", "clip.resolution_schedule=[]",
                 f"clip.patch_dropout={patch_dropout}", f"gradient_checkpointing={str(checkpointing).lower()}"]
    config = load_config(TrainConfig, REPO / "configs" / "stage1_1gpu.yaml", overrides)
    return estimate_memory(config, load_model_config(config.model, config.model_overrides), 1)["peak_gb"]


def check_train_step(args, device: torch.device, deadline: float) -> dict:
    if args.cpu_dry_run:
        common = ["--size", "tiny", "--batch", "2", "--warmup", "1", "--steps", "1", "--threads", "1",
                  "--patch-dropout", "0.5", "--captions", "realistic", "--sizes", "224"]
        runs = {"eager": ["--compile", "off", "--backends", "sdpa,xformers,flash"]}
    else:
        common = ["--size", "full", "--batch", str(args.batch), "--warmup", "2", "--steps", "4",
                  "--patch-dropout", "0.5", "--captions", "realistic", "--sizes", "224"]
        runs = {"eager": ["--compile", "off", "--backends", "sdpa,xformers,flash"],
                "compiled": ["--compile", "on", "--backends", "sdpa"]}
    out = {}
    for name, extra in runs.items():
        out[name] = run_json([sys.executable, str(BENCH / "train_step.py"), *common, *extra],
                             timeout=max(60.0, deadline - time.monotonic()))
    batch = int(common[common.index("--batch") + 1])
    if device.type == "cuda":
        estimate = memory_estimate(batch, 0.5, checkpointing=True)
        for report in out.values():
            for row in report["rows"]:
                if row.get("impl") == "mmclip" and row.get("peak_memory_gb") is not None:
                    row["estimated_peak_gb"] = estimate
    return out


def check_finetune_step(args, device: torch.device, deadline: float) -> dict:
    if args.cpu_dry_run:
        extra = ["--size", "tiny", "--image-size", "112", "--batch", "4", "--chunk", "2", "--warmup", "0",
                 "--steps", "1", "--threads", "1"]
    else:
        extra = ["--size", "full", "--image-size", "512", "--batch", "128", "--chunk", "32", "--warmup", "1",
                 "--steps", "3"]
    return run_json([sys.executable, str(BENCH / "finetune_step.py"), *extra],
                    timeout=max(60.0, deadline - time.monotonic()))


# --- 3. DeepSpeed ZeRO-1 stage 1 on real shards; 4. HF encode_image -------------------------------


def start_corpus(directory: Path, samples: int) -> subprocess.Popen:
    """The synthetic corpus (WebDataset shards + its tokenizer), generated while the GPU is busy."""
    command = [sys.executable, "-m", "data_pipelines", "synthetic", "--output", str(directory), "--size", str(samples),
               "--workers", str(max(1, (os.cpu_count() or 2) - 2))]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def deepspeed_run(args, corpus: Path, output: Path, deadline: float) -> dict:
    vocab = json.loads((corpus / "corpus.json").read_text())["tokenizer"]["vocab_size"]
    if args.cpu_dry_run:
        model, batch, chunks, precision = REPO / "configs" / "model" / "tiny.yaml", 8, {"image_text": 4, "text_pair": 4}, "fp32"
        model_overrides = [f"text.tokenizer={corpus / 'tokenizer'}", f"text.vocab_size={vocab}"]
    else:  # the full model keeps XLM-R's vocabulary; the corpus tokenizer uses its first ids
        model, batch, chunks, precision = REPO / "configs" / "model" / "jina-clip-v2.yaml", 1024, {"image_text": 128, "text_pair": 512}, "bf16"
        model_overrides = [f"text.tokenizer={corpus / 'tokenizer'}"]
    streams = {"image_text": {"kind": "image_text", "shards": [str(corpus / "train" / "image_text_short")], "batch_size": batch},
               "text_pair": {"kind": "text_pair", "shards": [str(corpus / "train" / "text_pair")], "batch_size": batch}}
    overrides = [f"model={model}", f"model_overrides={json.dumps(model_overrides)}", "steps=100000",
                 f"data.streams={json.dumps(streams)}", f"grad_cache_chunk={json.dumps(chunks)}",
                 "clip.resolution_schedule=[]", f"precision={precision}", "data.num_workers=4",
                 "logging.every_steps=1", "logging.tensorboard=false", "checkpoint.every_steps=100000"]
    if args.cpu_dry_run:
        overrides += ["data.image_size=56", "data.num_workers=0"]
    command = [sys.executable, "-m", "mmclip.cli", "train", str(REPO / "configs" / "stage1_1gpu.yaml"),
               "--output", str(output), *sum((["--set", o] for o in overrides), [])]
    log = output / "log.jsonl"
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first_step = None
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if first_step is None and log.is_file() and log.read_text().strip():
                first_step = time.monotonic()
            if first_step is not None and time.monotonic() - first_step >= args.run_seconds:
                break
            time.sleep(0.5)
        if process.poll() is None:
            process.send_signal(signal.SIGUSR1)  # the trainer checkpoints at the next step and exits 75
        _, stderr = process.communicate(timeout=max(60.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
    if process.returncode != 75:
        raise RuntimeError(f"mmclip train exited {process.returncode}, expected 75 (preempted): {stderr[-2000:]}")
    records = [json.loads(line) for line in log.read_text().splitlines()]
    from mmclip.train.run_checkpoint import find_latest

    checkpoint = find_latest(output / "checkpoints")
    steady = records[1:] or records
    return {"steps": records[-1]["step"], "seconds_of_steps": args.run_seconds, "per_rank_batch": batch,
            "grad_cache_chunk": chunks, "loss_first": records[0]["loss"], "loss_last": records[-1]["loss"],
            "samples_per_s": sum(sum(r["samples_per_s"].values()) if isinstance(r["samples_per_s"], dict)
                                 else r["samples_per_s"] for r in steady) / len(steady),
            "mfu": steady[-1].get("mfu"), "checkpoint": str(checkpoint), "ok": checkpoint is not None}


def encode_image_speed(checkpoint: Path, directory: Path, device: torch.device, dry_run: bool) -> dict:
    from PIL import Image
    from transformers import AutoModel

    from mmclip.export import export

    export(checkpoint, directory, dtype="fp32" if dry_run else "bf16")
    model = AutoModel.from_pretrained(str(directory), trust_remote_code=True).to(device).eval()
    count, batch = (8, 4) if dry_run else (1024, 128)
    generator = torch.Generator().manual_seed(0)
    images = [Image.fromarray(torch.randint(0, 256, (224, 224, 3), dtype=torch.uint8, generator=generator).numpy())
              for _ in range(count)]
    model.encode_image(images[:batch], batch_size=batch)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    embeddings = model.encode_image(images, batch_size=batch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return {"images": count, "batch_size": batch, "image_size": 224, "dtype": str(model.dtype),
            "images_per_s": count / seconds, "embedding_shape": list(embeddings.shape),
            "note": "includes the processor's resize and normalisation of PIL images, as users call it"}


def main() -> int:
    args = parse_args()
    start = time.monotonic()
    deadline = start + args.budget
    device = torch.device("cpu" if args.cpu_dry_run else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; use --cpu-dry-run on a CPU machine", file=sys.stderr)
        return 2
    report = {"check": "gpu_check", "device": describe_device(device), "dry_run": args.cpu_dry_run,
              "torch": torch.__version__, "python": platform.python_version(), "sections": {}}

    def section(name: str, work) -> object:
        began = time.monotonic()
        if began > deadline:
            report["sections"][name] = {"skipped": "out of time budget"}
            return None
        try:
            result = work()
            report["sections"][name] = {"result": result, "seconds": round(time.monotonic() - began, 1)}
            return result
        except Exception:  # one broken section must not cost the others their one GPU window
            report["sections"][name] = {"error": traceback.format_exc()[-3000:],
                                        "seconds": round(time.monotonic() - began, 1)}
            return None

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpus"
        generator = start_corpus(corpus, 64 if args.cpu_dry_run else 8000)
        section("attention", lambda: check_attention(device))
        section("train_step", lambda: check_train_step(args, device, deadline))

        def corpus_ready() -> dict:
            _, stderr = generator.communicate(timeout=max(60.0, deadline - time.monotonic()))
            if generator.returncode != 0:
                raise RuntimeError(f"corpus generation exited {generator.returncode}: {stderr[-2000:]}")
            return json.loads((corpus / "corpus.json").read_text())["train"]

        section("corpus", corpus_ready)
        run = section("deepspeed_run", lambda: deepspeed_run(args, corpus, tmp / "run", deadline))
        if run is not None and run["ok"]:
            section("encode_image", lambda: encode_image_speed(Path(run["checkpoint"]), tmp / "hf", device,
                                                              args.cpu_dry_run))
        else:
            report["sections"]["encode_image"] = {"skipped": "no checkpoint from deepspeed_run"}
        section("finetune_step", lambda: check_finetune_step(args, device, deadline))
        if generator.poll() is None:
            generator.kill()
    report["seconds"] = round(time.monotonic() - start, 1)
    sections = report["sections"]
    report["ok"] = all("result" in s for s in sections.values()) and sections["attention"]["result"]["ok"]
    output = args.output or BENCH / "results" / f"gpu_{device_name(device)}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({name: sorted(s) for name, s in report["sections"].items()}))
    print(f"gpu_check: {'ok' if report['ok'] else 'FAILED'} in {report['seconds']} s -> {output}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
