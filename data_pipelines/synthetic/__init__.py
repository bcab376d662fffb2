"""``python -m data_pipelines synthetic``: the embedded default's corpus, deterministic by seed.

Under ``--output DIR``::

    train/image_text_short/  scenes, one-sentence captions                     (mm;s)
    train/image_text_long/   scenes with long captions, plus document pages    (mm;l)
    train/text_pair/         translations, paraphrases, question -> caption    (txt;p)
    train/text_triplet/      query, positive, 7 one-attribute hard negatives   (txt;t)
    eval/                    held-out sets in the harnesses' layouts (eval_sets.py)
    tokenizer/               an XLM-R-format tokenizer trained on all training text
    corpus.json              seed, languages, sizes and per-set counts

Workers make samples in parallel, but a sample depends only on (seed, set, index) and the main
process writes in index order, so any ``--workers`` gives the same shards, byte for byte.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from mmclip.data.formats import ImageText, Record, TextPair, TextTriplet
from mmclip.data.shards import ShardSetWriter, WriteSummary

from .eval_sets import write_eval_sets
from .languages import LANGUAGES
from .render import SCENE_LONG_SIDE
from .samples import DOCUMENT_EVERY, TRAIN_SETS, Context

logger = logging.getLogger(__name__)

PRESETS = {"tiny": 400, "small": 8_000, "medium": 40_000, "large": 400_000}
FORMAT_NAME, FORMAT_VERSION = "mmclip-synthetic", 1


@dataclass(frozen=True)
class Plan:
    """Set sizes for a corpus of ``image_text`` image-text samples (half short, half long)."""

    name: str
    image_text: int

    @classmethod
    def parse(cls, text: str) -> Plan:
        if text in PRESETS:
            return cls(text, PRESETS[text])
        if text.isdigit() and int(text) >= 4:
            return cls(text, int(text))
        raise argparse.ArgumentTypeError(f"{text!r}: expected one of {', '.join(PRESETS)} or a number of samples >= 4")

    @property
    def train_sizes(self) -> dict[str, int]:
        n = self.image_text
        return {"image_text_short": n // 2, "image_text_long": n - n // 2, "text_pair": n, "text_triplet": n // 2}

    @property
    def eval_sizes(self) -> dict[str, int]:
        n = self.image_text
        return {
            "images": _clamp(n // 24, 32, 1000),  # >= 10 images for recall@10
            "documents": _clamp(n // 40, 16, 500),
            "sts": _clamp(n // 8, 50, 1500),
            "text_retrieval": _clamp(n // 12, 32, 1000),
        }

    @property
    def shard_samples(self) -> int:
        return _clamp(self.image_text // 8, 100, 5000)  # several shards per set, even for tiny

    @property
    def vocab_size(self) -> int:
        return 4000 if self.image_text <= PRESETS["small"] else 8000 if self.image_text <= PRESETS["medium"] else 16000


@dataclass
class Generated:
    summaries: dict[str, WriteSummary]
    corpus: dict
    seconds: float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", type=Path, required=True, help="new or empty directory for the corpus")
    parser.add_argument(
        "--size",
        type=Plan.parse,
        required=True,
        help=f"{' | '.join(PRESETS)} ({PRESETS}) or a number of image-text samples",
    )
    parser.add_argument("--seed", type=int, default=0, help="same seed, same corpus (default 0)")
    parser.add_argument("--languages", nargs="+", choices=LANGUAGES, default=list(LANGUAGES), help="caption languages")
    parser.add_argument(
        "--image-side",
        type=int,
        default=SCENE_LONG_SIDE,
        help=f"long side of the scene images in pixels (default {SCENE_LONG_SIDE}; document pages keep theirs)",
    )
    parser.add_argument(
        "--document-every",
        type=int,
        default=DOCUMENT_EVERY,
        help=f"every n-th image-text sample is a document page (default {DOCUMENT_EVERY}; 0: scenes only)",
    )
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="generator processes (default: all cores)"
    )


def run(args: argparse.Namespace) -> int:
    if args.output.exists() and any(args.output.iterdir()):
        logger.error("%s is not empty; the synthetic corpus goes into a new directory", args.output)
        return 1
    languages = tuple(code for code in LANGUAGES if code in args.languages)
    if args.document_every < 0:
        logger.error("--document-every must be >= 0, got %d", args.document_every)
        return 2
    result = generate(args.output, args.size, args.seed, languages, args.workers, args.image_side, args.document_every)
    for name, summary in result.summaries.items():
        print(f"train/{name}: {summary.format()}")
    evals, sizes = result.corpus["eval"], args.size.eval_sizes
    print(
        f"eval: {evals['clip_benchmark']['images']} images x {len(languages)} languages, "
        f"{evals['documents']['pages']} pages / {evals['documents']['queries']} queries, "
        f"{sizes['sts']} STS pairs and {sizes['text_retrieval']} text queries per language"
    )
    print(f"tokenizer: {result.corpus['tokenizer']['vocab_size']} tokens")
    samples = sum(summary.written for summary in result.summaries.values())
    print(
        f"{samples} training samples ({args.size.image_text} image-text) in {result.seconds:.1f} s with "
        f"{args.workers} workers: {samples / result.seconds:.0f} samples/s, "
        f"{args.size.image_text / result.seconds:.0f} image-text samples/s; written to {args.output}"
    )
    return 0


def generate(
    output: Path,
    plan: Plan,
    seed: int = 0,
    languages: tuple[str, ...] = LANGUAGES,
    workers: int = 1,
    image_side: int = SCENE_LONG_SIDE,
    document_every: int = DOCUMENT_EVERY,
) -> Generated:
    start = time.perf_counter()
    output = Path(output)
    ctx = Context(seed, languages, image_side, document_every)
    texts: dict[str, None] = {}  # every training text once, in order, for the tokenizer
    summaries, sets = {}, {}
    with _mapper(workers) as imap:
        for name, (kind, builder) in TRAIN_SETS.items():
            logger.info("train/%s: %d samples", name, plan.train_sizes[name])
            records = imap(partial(builder, ctx), plan.train_sizes[name])
            summaries[name], sets[name] = _write_train_set(output / "train" / name, kind, records, plan, texts)
        logger.info("eval: held-out sets")
        evals = write_eval_sets(output / "eval", ctx, plan.eval_sizes, imap)

    from .tokenizer import train_tokenizer  # imports transformers: only once the data exists

    logger.info("tokenizer: %d distinct texts, vocab_size <= %d", len(texts), plan.vocab_size)
    tokenizer = train_tokenizer(list(texts), plan.vocab_size, output / "tokenizer")
    corpus = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "seed": seed,
        "size": plan.name,
        "image_text_samples": plan.image_text,
        "languages": list(languages),
        "image_side": image_side,
        "document_every": document_every,
        "train": sets,
        "eval": evals,
        "tokenizer": {"path": "tokenizer", "vocab_size": len(tokenizer), "trained_on_texts": len(texts)},
    }
    (output / "corpus.json").write_text(json.dumps(corpus, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return Generated(summaries, corpus, time.perf_counter() - start)


def _write_train_set(directory: Path, kind: str, records, plan: Plan, texts: dict) -> tuple[WriteSummary, dict]:
    """Write one shard set; add its texts to ``texts``; its entry for ``corpus.json``."""
    writer = ShardSetWriter(directory, kind, max_samples=plan.shard_samples, mtime=0)
    languages, kinds = Counter(), Counter()
    for record in records:
        writer.write(record)
        texts.update(dict.fromkeys(_texts(record)))
        languages[record.language] += 1
        kinds[_subkind(record)] += 1
    summary = writer.close()
    entry = {"kind": kind, "samples": summary.written, "shards": summary.shards, "bytes": summary.bytes}
    return summary, {**entry, "languages": dict(sorted(languages.items())), "kinds": dict(sorted(kinds.items()))}


@contextmanager
def _mapper(workers: int):
    """``imap(builder, count)``: builder(0..count-1) in index order, in ``workers`` processes."""
    if workers <= 1:
        yield lambda builder, count: map(builder, range(count))
        return
    with multiprocessing.Pool(workers) as pool:
        yield lambda builder, count: pool.imap(builder, range(count), chunksize=_clamp(count // (8 * workers), 1, 32))


def _texts(record: Record) -> list[str]:
    if isinstance(record, ImageText):
        return [record.caption]
    if isinstance(record, TextTriplet):
        return [record.query, record.positive, *record.negatives]
    return [record.query, record.positive]


def _subkind(record: Record) -> str:
    if isinstance(record, ImageText):
        return record.caption_kind
    return record.pair_kind if isinstance(record, TextPair) else "hard_negatives"


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))
