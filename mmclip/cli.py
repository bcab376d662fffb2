"""The ``mmclip`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from . import demo
from .config import ConfigError


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
    demo_parser.set_defaults(run=demo.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except ConfigError as error:
        print(f"mmclip: config error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
