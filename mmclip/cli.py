"""The ``mmclip`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from .config import ConfigError
from .demo import clip as demo


def _info(args: argparse.Namespace) -> None:
    from .factory import load_model_config
    from .info import format_info, model_info

    if args.memory:
        _info_memory(args)
        return
    config = load_model_config(args.config, args.set)
    info = model_info(config)
    print(json.dumps(info, indent=2) if args.json else format_info(info, args.config))


def _info_memory(args: argparse.Namespace) -> None:
    from .config import load_config
    from .factory import load_model_config
    from .train.config import TrainConfig
    from .train.memory import estimate_memory, format_memory

    config = load_config(TrainConfig, args.config, args.set)
    if config.family != "clip":
        raise ConfigError(f"{args.config}: family: --memory estimates the CLIP family only, got {config.family!r}")
    world_size = args.world_size or config.world_size or 1
    try:
        config.check_world_size(world_size)
    except ValueError as error:
        raise ConfigError(f"{args.config}: {error}") from None
    estimate = estimate_memory(config, load_model_config(config.model, config.model_overrides), world_size)
    print(json.dumps(estimate, indent=2) if args.json else format_memory(estimate, args.config, args.device_gb))


def _train(args: argparse.Namespace) -> int | None:
    from pathlib import Path

    from .train import train
    from .train.preemption import EXIT_PREEMPTED, Preempted

    output = args.output or str(Path("runs") / Path(args.config).stem)
    try:
        train(args.config, output, args.set, args.resume)
    except Preempted as stop:
        logging.getLogger("mmclip.train").warning("%s; exit status %d (requeue, then --resume auto)", stop, EXIT_PREEMPTED)
        return EXIT_PREEMPTED


def _demo(args: argparse.Namespace) -> int:
    if args.model == "lusifer":
        from .demo import lusifer

        return lusifer.main(args.output, args.scale)
    return demo.run(args)


def _export(args: argparse.Namespace) -> None:
    from .export import export

    path = export(
        args.checkpoint, args.output, dtype=args.dtype, config=args.config, tokenizer=args.tokenizer,
        context_length=args.context_length, overrides=args.set,
    )
    print(f"exported {args.checkpoint} -> {path} ({args.dtype}); load with "
          f"AutoModel.from_pretrained({str(path)!r}, trust_remote_code=True)")


def add_export_parser(commands) -> None:
    export = commands.add_parser("export", help="a self-contained Hugging Face directory (remote code, safetensors)")
    export.add_argument("checkpoint", help="training checkpoint dir (model.safetensors + model.yaml) or a jina-clip-v2 dir")
    export.add_argument("--output", required=True, help="new directory to write")
    export.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="weight dtype (default fp32)")
    export.add_argument("--config", help="model YAML (default: the checkpoint's model.yaml; jina-clip-v2.yaml for a released dir)")
    export.add_argument("--tokenizer", help="tokenizer directory (default: the one the model config names, or the source dir)")
    export.add_argument("--context-length", type=int, help="encode_text's max tokens (default 512)")
    export.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a model config key")
    export.set_defaults(run=_export)


def _eval_clip_benchmark(args: argparse.Namespace) -> int:
    from eval.clip_benchmark import main as clip_benchmark_main

    return clip_benchmark_main(args.args)


def _eval_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from eval.report import run_evaluation

    run_evaluation(args.model, args.data, args.output, compare_with=args.compare, dims=args.dims)
    print(f"report: {Path(args.output) / 'report.md'}")
    return 0


def _eval_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from eval.report import compare

    results = [json.loads(Path(path).read_text()) for path in (args.a, args.b)]
    Path(args.output).mkdir(parents=True, exist_ok=True)
    print(compare(*results, args.output))
    return 0


def add_eval_parser(commands) -> None:
    evaluate = commands.add_parser("eval", help="evaluation harnesses on exported models or checkpoints")
    harnesses = evaluate.add_subparsers(dest="harness", required=True)
    clip_benchmark = harnesses.add_parser(
        "clip-benchmark", help="clip_benchmark's own CLI with --model_type mmclip (arguments passed unchanged)"
    )
    clip_benchmark.add_argument("args", nargs=argparse.REMAINDER, help="e.g. eval --model_type mmclip --pretrained DIR ...")
    clip_benchmark.set_defaults(run=_eval_clip_benchmark)

    report = harnesses.add_parser("report", help="every benchmark at every Matryoshka dim: JSON, markdown, plots")
    report.add_argument("model", help="an mmclip export directory or a training checkpoint")
    report.add_argument("--compare", metavar="RESULTS_JSON", help="an earlier evaluation's results.json to set side by side")
    report.add_argument("--data", required=True, help="held-out sets: clip_benchmark/, sts/, text_retrieval/, documents/")
    report.add_argument("--output", required=True, help="report directory")
    report.add_argument("--dims", type=int, nargs="+", help="Matryoshka dims (default: all the model's)")
    report.set_defaults(run=_eval_report)

    compare = harnesses.add_parser("compare", help="two evaluations side by side (markdown table and bar chart)")
    compare.add_argument("a", help="results.json of the first model (e.g. stage 2)")
    compare.add_argument("b", help="results.json of the second model (e.g. stage 3)")
    compare.add_argument("--output", required=True, help="directory for comparison.md and comparison.png")
    compare.set_defaults(run=_eval_compare)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmclip", description="Multilingual multimodal embeddings (jina-clip-v2 style).")
    commands = parser.add_subparsers(dest="command", required=True)

    info = commands.add_parser("info", help="parameters and FLOPs of a model config; peak GPU memory of a stage config")
    info.add_argument("config", help="model YAML, e.g. configs/model/jina-clip-v2.yaml (a stage YAML with --memory)")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.add_argument("--memory", action="store_true", help="CONFIG is a stage YAML: estimate peak memory per GPU")
    info.add_argument("--world-size", type=int, help="--memory: ranks (default: the config's world_size, else 1)")
    info.add_argument("--device-gb", type=float, default=80.0, help="--memory: GPU memory to compare with (default 80)")
    info.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    info.set_defaults(run=_info)

    train = commands.add_parser(
        "train", help="train one stage (launch with torchrun or srun for several processes)",
        epilog="SIGTERM or SIGUSR1: checkpoint at the next step, exit status 75 (requeue, then --resume auto).",
    )
    train.add_argument("config", help="stage YAML (a mmclip.train.TrainConfig)")
    train.add_argument("--output", help="run directory (default: runs/<config name>)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    train.add_argument("--resume", metavar="auto|PATH", help="auto: the newest complete checkpoint in --output")
    train.set_defaults(run=_train)

    demo_parser = commands.add_parser("demo", help="the embedded default: synthetic data, three stages on CPU, retrieval")
    demo.add_arguments(demo_parser)
    demo_parser.add_argument(
        "--model", choices=("clip", "lusifer"), default="clip",
        help="clip: the dual encoder's three stages (default); lusifer: LUSIFER's alignment and finetuning "
        "(text only; --size and --workers apply to clip, --scale to both)",
    )
    demo_parser.set_defaults(run=_demo)
    add_export_parser(commands)
    from .search.cli import add_search_parser

    add_search_parser(commands)
    add_eval_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # logs each CPU variant it fails to load
    logging.getLogger("mteb").setLevel(logging.WARNING)  # logs every corpus chunk; we print the scores
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except ConfigError as error:
        print(f"mmclip: config error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
