"""LUSIFER's text-only synthetic corpus (``mmclip demo --model lusifer``), built with the generator's
own sample builders (no images):

    train/text/          plain texts: long scene descriptions (the Wikitext-style reconstruction set)
    train/text_pair/     query -> positive pairs
    train/text_triplet/  triplets with 7 one-attribute hard negatives
    eval/text_retrieval/{lang}/   held-out BEIR sets
    tokenizer/           the XLM-R-format encoder tokenizer
    mistral/             a tiny Mistral with its BPE tokenizer (:mod:`.tiny_llm`)
"""

from __future__ import annotations

from pathlib import Path

from mmclip.data.formats import Text
from mmclip.data.shards import ShardSetWriter

from .eval_sets import write_text_retrieval
from .languages import GRAMMARS, LANGUAGES
from .randomness import rng_for
from .samples import Context, text_pair, text_triplet
from .scenes import sample_scene
from .tiny_llm import write_tiny_mistral
from .tokenizer import train_tokenizer

SIZES = {"texts": 800, "pairs": 800, "triplets": 600, "eval_queries": 40}
ENCODER_VOCAB, LLM_VOCAB = 2000, 2000
LLM_PRETRAIN_STEPS = 200
SEED = 0


def write_corpus(directory: Path, scale: float = 1.0, seed: int = SEED) -> dict:
    """The demo's data (see the module docstring), ``scale`` times ``SIZES``; its counts for the report."""
    ctx = Context(seed, LANGUAGES)
    sizes = {name: max(16, round(size * scale)) for name, size in SIZES.items()}
    texts: dict[str, None] = {}
    records = {
        "text": (description(ctx, i) for i in range(sizes["texts"])),
        "text_pair": (text_pair(ctx, i) for i in range(sizes["pairs"])),
        "text_triplet": (text_triplet(ctx, i) for i in range(sizes["triplets"])),
    }
    counts = {}
    for kind, stream in records.items():
        with ShardSetWriter(directory / "train" / kind, kind, max_samples=200, mtime=0) as writer:
            for record in stream:
                writer.write(record)
                fields = [record.text] if kind == "text" else [record.query, record.positive]
                texts.update(dict.fromkeys(fields + list(getattr(record, "negatives", []))))
        counts[kind] = writer.summary.written
    write_text_retrieval(directory / "eval" / "text_retrieval", ctx, sizes["eval_queries"])
    corpus = list(texts)
    train_tokenizer(corpus, ENCODER_VOCAB, directory / "tokenizer")
    write_tiny_mistral(directory / "mistral", corpus, vocab_size=LLM_VOCAB, seed=seed,
                       pretrain_steps=max(10, round(LLM_PRETRAIN_STEPS * scale)))
    return {"train": counts, "eval_queries_per_language": sizes["eval_queries"], "languages": list(LANGUAGES)}


def description(ctx: Context, index: int) -> Text:
    """A plain-text passage: one scene's long description in the language whose turn it is."""
    rng = rng_for(ctx.seed, "text", index)
    language = ctx.language(index)
    text = GRAMMARS[language].long_caption(sample_scene(rng, pair=True))
    return Text(f"text-{index:08d}", text, language, "synthetic/scenes")
