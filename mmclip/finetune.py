"""``mmclip finetune BASE DATA --output RUN``: a model users have, fine-tuned on their image-caption pairs, exported.

A command module like :mod:`mmclip.demo`: it drives the shard builder (``data_pipelines build``)
and the held-out retrieval evaluation, which the library itself never imports.

1. **The base model** (:func:`resolve_base`): a released jina-clip-v2 directory, a whole open_clip
   (or EVA-CLIP) checkpoint file, such a vision checkpoint plus an HF XLM-R with ``--text-base``,
   an ``mmclip export`` directory, or an mmclip training checkpoint (or run directory). It becomes
   a model config (the architecture from ``--config``, default jina-clip-v2's, or the base's own),
   the weights to start from and the tokenizer; training runs at the base model's resolution.
2. **The data**: an image folder with caption files, CSV/TSV, JSONL or Parquet (whatever
   ``data_pipelines build`` reads), or an mmclip shard set, used as it is. ``--eval`` names a
   held-out set in the same forms; ``--holdout F`` keeps every 1/F-th training row out instead.
   The held-out pairs are written in clip_benchmark's layout, one annotation file per language.
3. **The stage config** ``RUN/stage.yaml``: ``configs/finetune/jina-clip-v2.yaml`` (a locked vision
   tower, LoRA on the text tower, GradCache) with what depends on the data: the batch (at most the
   recipe's, at most the pair count), about ``--epochs`` passes over it (at least 100 steps), 5%
   warm-up. ``--vision`` / ``--text`` pick another tower mode, ``--set`` any other key.
4. Held-out retrieval of the model as training starts it, training (``RUN/train``), the export
   (``RUN/hf``, LoRA merged, task instructions kept), held-out retrieval of the export's weights;
   ``RUN/report.json`` holds both and the gain. ``mmclip search index RUN/hf ...`` is the next step.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from .config import CONFIG_DIR, ConfigError

logger = logging.getLogger(__name__)

RECIPE = CONFIG_DIR / "finetune" / "jina-clip-v2.yaml"
JINA_CLIP_V2_MODEL = CONFIG_DIR / "model" / "jina-clip-v2.yaml"
TOKENIZER_FILES = ("tokenizer.json", "sentencepiece.bpe.model", "tokenizer_config.json")
MIN_STEPS = 100
WARMUP_FRACTION = 0.05
HEADLINE = "recall@5"  # the report's gain: mean over languages and both directions
MIN_EVAL_PAIRS = 5  # a language with fewer held-out pairs has no recall@5 and is left out


@dataclass
class Base:
    """A base model as the stage config names it: model YAML, its overrides, weights, tokenizer."""

    kind: str
    model: str
    overrides: list[str]
    init_from: Path | None
    tokenizer: Path | None


# --- the base model ---------------------------------------------------------------------------------


def _has_tokenizer(directory: Path) -> bool:
    return directory.is_dir() and any((directory / name).exists() for name in TOKENIZER_FILES)


def resolve_base(path: Path, work: Path, config: str | None, text_base: Path | None) -> Base:
    """What ``path`` is and how the stage loads it (``work``: the run directory, where an export is
    unpacked into ``base/`` and a checkpoint's model config written as ``model.yaml``).

    Every path handed to the stage config is absolute: it lives in ``RUN/stage.yaml``.
    """
    from . import checkpoint
    from .export import released_settings
    from .train.run_checkpoint import find_latest

    if not path.exists():
        raise ConfigError(f"{path}: no such file or directory")
    path = path.absolute()
    config = str(Path(config).absolute()) if config else None
    if text_base is not None and not path.is_file():
        raise ConfigError(f"--text-base: BASE must then be a vision checkpoint file, got the directory {path}")
    if path.is_dir() and not checkpoint.is_checkpoint(path) and (latest := find_latest(path)) is not None:
        path = latest  # a run directory: its newest checkpoint
    kind, tokenizer = "mmclip checkpoint", None
    if not checkpoint.is_checkpoint(path) and (path / "config.json").is_file():
        hf_config = json.loads((path / "config.json").read_text())
        if "clip" not in hf_config:
            return Base("jina-clip-v2", config or str(JINA_CLIP_V2_MODEL), released_settings(path), None,
                        path if _has_tokenizer(path) else None)
        kind, tokenizer = "mmclip export", path if _has_tokenizer(path) else None
        path = _unpack_export(path, hf_config, work / "base")
    if checkpoint.is_checkpoint(path):
        family, model_config = checkpoint.read_config(path)
        if family != "clip":
            raise ConfigError(f"{path}: a {family} checkpoint; mmclip finetune trains the dual encoder")
        if config is None:  # its model config as a plain model YAML (paths absolute), for the stage config
            config = str(work / "model.yaml")
            Path(config).write_text(yaml.safe_dump(checkpoint.config_dict(model_config), sort_keys=False))
        tokenizer = tokenizer or (Path(model_config.text.tokenizer) if model_config.text.tokenizer else None)
        return Base(kind, config, [], path, tokenizer)
    if path.is_file() and text_base is not None:
        text_base = text_base.absolute()
        return Base("vision checkpoint + text model", config or str(JINA_CLIP_V2_MODEL),
                    [f"vision.pretrained={path}", f"text.pretrained={text_base}", *_hf_text_settings(text_base)],
                    None, text_base if _has_tokenizer(text_base) else None)
    if path.is_file():
        return Base("dual-encoder checkpoint", config or str(JINA_CLIP_V2_MODEL),
                    [f"pretrained={path}", *_projection_settings(path)], None, None)
    raise ConfigError(f"{path}: not a model: expected a jina-clip-v2 or mmclip export directory (config.json), an "
                      f"mmclip checkpoint ({checkpoint.CONFIG_FILE} + {checkpoint.WEIGHTS_FILE}) or run directory, "
                      "or a checkpoint file")


def _unpack_export(path: Path, hf_config: dict, directory: Path) -> Path:
    """An export as an mmclip checkpoint in ``directory``: its weights without ``clip.``, its config
    and task instructions. The stage starts from it (``init_from``)."""
    from safetensors.torch import load_file

    from . import checkpoint
    from .models import CLIPConfig

    weights = {key.removeprefix("clip."): value for key, value in load_file(str(path / "model.safetensors")).items()}
    fields = {**hf_config["clip"], "task_instructions": hf_config.get("task_instructions") or {}}
    return checkpoint.write(directory, CLIPConfig(**fields), weights)


def _hf_text_settings(text_base: Path) -> list[str]:
    """An HF XLM-R's position table (absolute, its length) and vocabulary, from its config.json."""
    config_file = text_base / "config.json"
    if not config_file.is_file():
        return []
    hf = json.loads(config_file.read_text())
    if hf.get("position_embedding_type", "absolute") != "absolute" or "max_position_embeddings" not in hf:
        return []
    return ["text.position_embedding=absolute", f"text.max_position_embeddings={hf['max_position_embeddings']}",
            f"text.vocab_size={hf.get('vocab_size', 250002)}"]


def _projection_settings(path: Path) -> list[str]:
    """Projections (and their biases) where the checkpoint has them; the embedding width is theirs."""
    from .weights import projection_shapes

    shapes = projection_shapes(path)
    if not shapes:
        return []
    embed_dim = next(shape[0] for name, shape in shapes.items() if name.endswith(".weight"))
    return ["projections=true", f"embed_dim={embed_dim}", f"matryoshka_dims=[{embed_dim}]",
            f"vision_proj_bias={'vision_proj.bias' in shapes}", f"text_proj_bias={'text_proj.bias' in shapes}"]


# --- the data ---------------------------------------------------------------------------------------


def _build_args(data: Path, output: Path, workers: int, flags: list[str]) -> argparse.Namespace:
    from data_pipelines import build

    parser = argparse.ArgumentParser(prog="mmclip finetune --build-arg")
    build.add_arguments(parser)
    args = parser.parse_args([str(data), str(output), "--workers", str(workers), *flags])
    args.source = args.source or data.stem
    return args


def build_shards(data: Path, output: Path, workers: int, flags: list[str], holdout: float = 0.0,
                 heldout_output: Path | None = None) -> tuple[Path, Path | None]:
    """``data`` as image-text shard sets (the builder's filters and skip records); an mmclip shard set
    is used as it is. With ``holdout``, every ``round(1 / holdout)``-th row goes to ``heldout_output``."""
    from data_pipelines import build
    from mmclip.data.shards import ShardSetWriter, read_shard_set

    if (data / "manifest.json").is_file():
        if holdout:
            raise ConfigError(f"--holdout: {data} is a shard set already; give a held-out set with --eval")
        if read_shard_set(data).kind != "image_text":
            raise ConfigError(f"{data}: a {read_shard_set(data).kind} shard set; fine-tuning reads image_text pairs")
        return data, None
    args = _build_args(data.resolve(), output, workers, flags)  # folder rows name their images relative to it
    try:
        rows = list(build.read_rows(args))
    except ValueError as error:
        raise ConfigError(str(error)) from None
    parts = {output: rows}
    if holdout:
        stride = max(2, round(1 / holdout))
        parts = {output: [row for i, row in enumerate(rows) if i % stride != stride - 1],
                 heldout_output: [row for i, row in enumerate(rows) if i % stride == stride - 1]}
    for directory, part in parts.items():
        args.output = directory
        writer = ShardSetWriter(directory, "image_text", args.shard_max_samples, args.shard_max_bytes)
        print(build.build(part, args, writer).format(), flush=True)
    return output, heldout_output if holdout else None


def write_retrieval_set(shards: Path, root: Path) -> dict[str, int]:
    """Held-out pairs in clip_benchmark's layout (``eval.retrieval`` reads it): the images under
    ``root/images`` and ``crossmodal3600_captions-{lang}.json`` per language. Returns pairs per language."""
    import webdataset as wds

    from mmclip.data.formats import decode
    from mmclip.data.shards import read_shard_set

    images = root / "images"
    images.mkdir(parents=True)
    by_language: dict[str, tuple[list[str], list[str]]] = {}
    number = itertools.count()
    for shard in read_shard_set(shards).shards:
        for sample in wds.WebDataset(str(shard), shardshuffle=False, empty_check=False):
            record = decode("image_text", sample)
            name = f"{next(number):06d}.{record.image_format}"
            (images / name).write_bytes(record.image)
            paths, captions = by_language.setdefault(record.language or "und", ([], []))
            paths.append(f"images/{name}")
            captions.append(record.caption)
    for language, (paths, captions) in by_language.items():
        annotation = {"image_paths": paths, "annotations": captions, "indices": list(range(len(paths)))}
        (root / f"crossmodal3600_captions-{language}.json").write_text(json.dumps(annotation, ensure_ascii=False))
    return {language: len(paths) for language, (paths, _) in sorted(by_language.items())}


# --- the stage --------------------------------------------------------------------------------------


def stage_config(base: Base, shards: Path, pairs: int, args: argparse.Namespace) -> dict:
    """The recipe with the base model, the data and the defaults that depend on them."""
    from .factory import load_model_config
    from .train.config import TowerTraining

    stage = yaml.safe_load(RECIPE.read_text())
    tokenizer = args.tokenizer.absolute() if args.tokenizer else base.tokenizer
    if tokenizer is None:
        raise ConfigError(f"{args.base}: no tokenizer beside the base model; pass --tokenizer DIR")
    overrides = [*base.overrides, f"text.tokenizer={tokenizer}"]
    model_config = load_model_config(base.model, overrides)
    image_size = args.image_size or model_config.vision.image_size
    overrides.append(f"vision.image_size={image_size}")
    # Positions start after the pad id (RoBERTa): an absolute table of P rows holds P - 2 tokens.
    longest = model_config.text.max_position_embeddings - 2
    stage["data"]["context_length"] = min(stage["data"]["context_length"], longest)
    stream = stage["data"]["streams"]["image_text"]
    chunk = stage["grad_cache_chunk"]["image_text"]
    batch = args.batch_size or min(stream["batch_size"], max(1, pairs))
    if batch >= chunk:
        batch -= batch % chunk  # GradCache splits the batch evenly
    else:
        stage["grad_cache_chunk"] = {}  # a batch that small fits whole
    steps = args.steps or max(MIN_STEPS, math.ceil(args.epochs * pairs / batch))
    stage.update(model=base.model, model_overrides=overrides, steps=steps,
                 init_from=str(base.init_from) if base.init_from else None)
    stage["data"]["image_size"] = image_size
    stream.update(shards=[str(shards.absolute())], batch_size=batch)
    stage["optimizer"]["warmup_steps"] = max(1, round(WARMUP_FRACTION * steps))
    stage["checkpoint"]["every_steps"] = steps
    for tower in ("vision", "text"):
        label = getattr(args, tower)
        if label is not None:  # checked by _usage_error
            stage["clip"]["towers"][tower] = vars(TowerTraining.parse(label))
    return stage


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _evaluate(model, tokenizer, root: Path, context_length: int, counts: dict[str, int]) -> dict[str, dict[str, float]]:
    """Recall@1 and @5 (and @10 where every language has 10 pairs) per language of at least 5 pairs."""
    from eval.retrieval import RECALL_K, evaluate_retrieval

    languages = [language for language, count in counts.items() if count >= MIN_EVAL_PAIRS]
    device = "cuda" if _cuda() else "cpu"
    model.to(device)
    try:
        return evaluate_retrieval(model, root, tokenizer, context_length=context_length, device=device,
                                  languages=languages, recall_k=[k for k in RECALL_K if k <= min(counts[lang]
                                                                  for lang in languages)])
    finally:
        model.to("cpu")


def headline(metrics: dict[str, dict[str, float]]) -> float:
    values = [m[f"{d}_retrieval_{HEADLINE}"] for m in metrics.values() for d in ("image", "text")]
    return sum(values) / len(values)


def _start_model(stage_path: Path, overrides: list[str]):
    """The model exactly as training starts it (base weights, towers set up), and its tokenizer."""
    from .tokenizer import load_tokenizer
    from .train import load_train_config
    from .train.families.clip import CLIPFamily

    config, model_config = load_train_config(stage_path, overrides, 1)
    init_from = Path(config.init_from) if config.init_from else None
    model = CLIPFamily(config, model_config).build_model(config.data.image_size, init_from)
    return model, load_tokenizer(model.config.text.tokenizer, model.config.text), config.data.context_length


# --- the command ------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("base", type=Path, help="jina-clip-v2 dir, mmclip export or checkpoint (or run dir), "
                                                "open_clip / EVA-CLIP checkpoint file (a vision one with --text-base)")
    parser.add_argument("data", type=Path, help="image folder with captions (cat.jpg + cat.txt), CSV/TSV, JSONL, "
                                                "Parquet, or an mmclip image_text shard set")
    parser.add_argument("--output", type=Path, required=True, help="new directory: data, run, export, report")
    parser.add_argument("--eval", type=Path, help="held-out pairs (the same forms as DATA): retrieval before and after")
    parser.add_argument("--holdout", type=float, default=0.0, help="instead of --eval: this fraction of DATA's rows")
    parser.add_argument("--text-base", type=Path, help="an HF XLM-R directory; BASE is then a vision checkpoint")
    parser.add_argument("--config", help="model YAML of the base architecture (default: jina-clip-v2's, or the "
                                         "base's own for mmclip exports and checkpoints)")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer directory (default: the base model's)")
    parser.add_argument("--vision", help="vision tower: full, frozen, lora, lock or lock:N (default lock:0)")
    parser.add_argument("--text", help="text tower: full, frozen, lora, lock or lock:N (default lora)")
    parser.add_argument("--steps", type=int, help=f"default: --epochs over DATA, at least {MIN_STEPS}")
    parser.add_argument("--epochs", type=float, default=5.0, help="passes over DATA when --steps is not given")
    parser.add_argument("--batch-size", type=int, help="global batch (default: the recipe's 1024, at most the pairs)")
    parser.add_argument("--image-size", type=int, help="default: the base model's resolution")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="shard builder processes")
    parser.add_argument("--build-arg", action="append", default=[], metavar="FLAG",
                        help="passed to data_pipelines build, e.g. --build-arg=--min-words=2")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a stage config key")


def _usage_error(args: argparse.Namespace) -> str | None:
    from .train.config import TowerTraining

    if args.output.exists() and any(args.output.iterdir()):
        return f"--output: {args.output} is not empty; fine-tuning writes a new directory"
    for path in (args.base, args.data, args.text_base):
        if path is not None and not path.exists():
            return f"{path}: no such file or directory"
    for tower in ("vision", "text"):
        try:
            if getattr(args, tower) is not None:
                TowerTraining.parse(getattr(args, tower))
        except ValueError as error:
            return f"--{tower}: {error}"
    if args.eval is not None and not args.eval.exists():
        return f"--eval: {args.eval}: no such file or directory"
    if not 0 <= args.holdout < 1 or (args.holdout and args.eval is not None):
        return "--holdout: a fraction in [0, 1), and not together with --eval"
    if args.steps is not None and args.steps <= 0 or args.epochs <= 0:
        return "--steps and --epochs must be positive"
    return None


def run(args: argparse.Namespace) -> int:
    if error := _usage_error(args):
        print(f"mmclip finetune: {error}", file=sys.stderr)
        return 2
    run_dir = args.output
    data_dir = run_dir / "data"
    run_dir.mkdir(parents=True, exist_ok=True)
    base = resolve_base(args.base, run_dir.absolute(), args.config, args.text_base)
    logger.info("base model: %s (%s)", args.base, base.kind)

    heldout = data_dir / "heldout" if args.holdout else None
    train_shards, heldout = build_shards(args.data, data_dir / "train", args.workers, args.build_arg, args.holdout,
                                         heldout)
    if args.eval is not None:
        heldout, _ = build_shards(args.eval, data_dir / "heldout", args.workers, args.build_arg)
    from mmclip.data.shards import read_shard_set

    pairs = read_shard_set(train_shards).total
    if pairs == 0:
        raise ConfigError(f"{args.data}: no pair passed the builder's checks (see {train_shards}/skipped.jsonl)")
    eval_root = None
    if heldout is not None:
        eval_root = data_dir / "eval"
        counts = write_retrieval_set(heldout, eval_root)
        logger.info("held-out pairs per language: %s", counts)
        if not any(count >= MIN_EVAL_PAIRS for count in counts.values()):
            raise ConfigError(f"held-out set: {counts} pairs per language; retrieval needs {MIN_EVAL_PAIRS} in one")

    stage_path = run_dir / "stage.yaml"
    stage_path.write_text(yaml.safe_dump(stage_config(base, train_shards, pairs, args), sort_keys=False))
    print(f"{pairs} training pairs; stage config {stage_path}", flush=True)

    report: dict = {"base": str(args.base), "base_kind": base.kind, "pairs": pairs, "stage": str(stage_path)}
    if eval_root is not None:
        model, tokenizer, context_length = _start_model(stage_path, args.set)
        report["before"] = _evaluate(model, tokenizer, eval_root, context_length, counts)
        del model
        print(format_metrics("base model", report["before"]), flush=True)

    from .export import export, load_source
    from .train import train

    checkpoint = Path(train(stage_path, run_dir / "train", args.set))
    hf = export(checkpoint, run_dir / "hf")
    report.update(checkpoint=str(checkpoint), export=str(hf))
    if eval_root is not None:
        loaded = load_source(checkpoint)
        report["after"] = _evaluate(loaded.model, tokenizer, eval_root, context_length, counts)
        report["gain"] = {HEADLINE: headline(report["after"]) - headline(report["before"])}
        print(format_metrics("fine-tuned", report["after"]), flush=True)
        print(f"held-out {HEADLINE} (mean of languages and directions): {headline(report['before']):.3f} -> "
              f"{headline(report['after']):.3f} ({report['gain'][HEADLINE]:+.3f})", flush=True)
    (run_dir / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(f"exported {hf}; next: mmclip search index {hf} --images DIR --output {run_dir / 'index'}")
    return 0


def format_metrics(title: str, metrics: dict[str, dict[str, float]]) -> str:
    lines = [f"{title}: held-out retrieval (t2i: the caption finds its image, i2t: the image its caption)"]
    for language, m in metrics.items():
        recalls = "  ".join(f"{short}@{k} {m[f'{direction}_retrieval_recall@{k}']:.3f}"
                            for short, direction in (("t2i", "image"), ("i2t", "text")) for k in (1, 5))
        lines.append(f"  {language:<5} {recalls}")
    return "\n".join(lines)
