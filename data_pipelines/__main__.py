"""``python -m data_pipelines {build,inspect,synthetic} ...``: make and check mmclip shard sets."""

from __future__ import annotations

import argparse
import logging
import sys

from . import build, inspect_shards, synthetic

COMMANDS = {
    "build": (build, "build shards from JSONL, CSV, Parquet, image folders, HF datasets or WebDataset tars"),
    "inspect": (inspect_shards, "shard sets, tars, patterns, URLs: counts per kind, language and length; every bad sample"),
    "synthetic": (synthetic, "generate the synthetic multilingual corpus (deterministic by seed)"),
}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m data_pipelines", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        module.add_arguments(commands.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    return COMMANDS[args.command][0].run(args)


if __name__ == "__main__":
    sys.exit(main())
