"""``mmclip demo --model lusifer --output DIR``: LUSIFER's two stages end to end on a CPU in minutes.

1. writes a text-only synthetic multilingual corpus into ``DIR/data`` with the synthetic
   generator's own sample builders (no images): plain texts (long scene descriptions, the
   Wikitext-style reconstruction set), query -> positive pairs, triplets with 7 one-attribute hard
   negatives, the held-out ``eval/text_retrieval/{lang}`` BEIR sets, the XLM-R-format encoder
   tokenizer, and a tiny Mistral with its BPE tokenizer (:mod:`mmclip.tiny_llm`);
2. trains alignment (``configs/lusifer/demo_align.yaml``) then finetuning (``demo_finetune.yaml``,
   from alignment's final checkpoint) with the real trainer;
3. after each stage exports the checkpoint (``DIR/hf_align``, ``DIR/hf``) and scores per-language
   text retrieval (nDCG@10) with mteb on the exported model, through ``eval.mteb_tasks``;
4. writes ``DIR/report.json``: per-stage retrieval, the final losses, timings, and whether
   finetuning beat alignment alone in every language.

See ``docs/lusifer.md`` for the expected numbers and time.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs" / "lusifer"
STAGES = {"align": "demo_align.yaml", "finetune": "demo_finetune.yaml"}
SIZES = {"texts": 800, "pairs": 800, "triplets": 600, "eval_queries": 40}
ENCODER_VOCAB, LLM_VOCAB = 2000, 2000
LLM_PRETRAIN_STEPS = 200
SEED = 0


def write_corpus(directory: Path, scale: float = 1.0, seed: int = SEED) -> dict:
    """The demo's data (see the module docstring), ``scale`` times ``SIZES``; its counts for the report."""
    from data_pipelines.synthetic.eval_sets import write_text_retrieval
    from data_pipelines.synthetic.languages import LANGUAGES
    from data_pipelines.synthetic.samples import Context, text_pair, text_triplet

    from .data.shards import ShardSetWriter
    from .tiny_llm import write_tiny_mistral
    from .tokenizer import train_tokenizer

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


def description(ctx, index: int):
    """A plain-text passage: one scene's long description in the language whose turn it is."""
    from data_pipelines.synthetic.languages import GRAMMARS
    from data_pipelines.synthetic.randomness import rng_for
    from data_pipelines.synthetic.scenes import sample_scene

    from .data.formats import Text

    rng = rng_for(ctx.seed, "text", index)
    language = ctx.language(index)
    text = GRAMMARS[language].long_caption(sample_scene(rng, pair=True))
    return Text(f"text-{index:08d}", text, language, "synthetic/scenes")


def stage_overrides(stage: str, output: Path, init_from: Path | None, scale: float = 1.0) -> list[str]:
    """Point a demo config at the generated corpus, its tokenizers and the tiny Mistral; chain the stages."""
    from .config import load_yaml
    from .tokenizer import load_tokenizer

    config = load_yaml(CONFIG_DIR / STAGES[stage])
    data = output / "data"
    overrides = [f"model={json.dumps(str(REPO / config['model']))}"]
    for name, stream in config["data"]["streams"].items():
        overrides.append(f"data.streams.{name}.shards={json.dumps([str(output / s) for s in stream['shards']])}")
    vocab_size = len(load_tokenizer(data / "tokenizer"))
    model_overrides = [
        f"encoder.tokenizer={data / 'tokenizer'}", f"encoder.vocab_size={vocab_size}",
        f"llm_pretrained={data / 'mistral'}", f"llm_tokenizer={data / 'mistral'}",
    ]
    overrides.append(f"model_overrides={json.dumps(model_overrides)}")
    if init_from is not None:
        overrides.append(f"init_from={json.dumps(str(init_from))}")
    if scale != 1.0:
        steps = max(2, round(config["steps"] * scale))
        overrides += [f"steps={steps}", f"optimizer.warmup_steps={round(config['optimizer']['warmup_steps'] * scale)}"]
    return overrides


def evaluate(model_dir: Path, data: Path) -> dict[str, float]:
    """nDCG@10 per language of mteb's retrieval evaluation on the held-out text sets."""
    from eval.mteb_tasks import MMCLIPEncoder, local_text_retrieval, run_tasks

    task = local_text_retrieval(data / "eval" / "text_retrieval")
    return run_tasks(MMCLIPEncoder(model_dir), [task])[task.metadata.name]


def main(output: Path, scale: float = 1.0) -> int:
    """The command: into a new directory, on every core."""
    import torch

    if output.exists() and any(output.iterdir()):
        logger.error("%s is not empty; the demo writes into a new directory", output)
        return 1
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        run(output, scale)
    finally:
        torch.set_num_threads(threads)
    return 0


def run(output: Path, scale: float = 1.0) -> dict:
    """The demo into ``output``; ``scale`` multiplies the corpus, the LLM's pretraining and the steps."""
    from .export import export
    from .train import train
    from .train.metrics import read_jsonl

    start = time.perf_counter()
    report: dict = {"scale": scale, "stages": {}}
    data = output / "data"
    report["corpus"] = write_corpus(data, scale)
    report["corpus_seconds"] = round(time.perf_counter() - start, 1)
    checkpoint = None
    for stage, name in STAGES.items():
        stage_start = time.perf_counter()
        run_dir = output / "runs" / stage
        checkpoint = Path(train(CONFIG_DIR / name, run_dir, overrides=stage_overrides(stage, output, checkpoint, scale)))
        train_seconds = time.perf_counter() - stage_start
        hf = output / ("hf" if stage == "finetune" else f"hf_{stage}")
        export(checkpoint, hf)
        scores = evaluate(hf, data)
        log = read_jsonl(run_dir / "log.jsonl")
        report["stages"][stage] = {
            "checkpoint": str(checkpoint),
            "export": str(hf),
            "train_seconds": round(train_seconds, 1),
            "eval_seconds": round(time.perf_counter() - stage_start - train_seconds, 1),
            "loss": {"first": log[0]["loss"], "last": log[-1]["loss"], "per_stream": {
                key.removeprefix("loss/"): value for key, value in log[-1].items() if key.startswith("loss/")}},
            "ndcg@10": scores,
        }
        print(format_table(stage, scores), flush=True)
    align, finetune = (report["stages"][stage]["ndcg@10"] for stage in STAGES)
    report["finetune_improves"] = {lang: finetune[lang] > align[lang] for lang in align}
    report["seconds"] = round(time.perf_counter() - start, 1)
    (output / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    mean = {stage: sum(s.values()) / len(s) for stage, s in (("align", align), ("finetune", finetune))}
    better = sum(report["finetune_improves"].values())
    print(f"mean nDCG@10: alignment {mean['align']:.3f} -> finetuning {mean['finetune']:.3f} "
          f"(better in {better}/{len(align)} languages); {report['seconds']:.0f} s in all; "
          f"report: {output / 'report.json'}")
    return report


def format_table(stage: str, scores: dict[str, float]) -> str:
    languages = sorted(scores)
    return "\n".join([f"{stage}: held-out text retrieval, nDCG@10",
                      " ".join(f"{lang:>6}" for lang in languages),
                      " ".join(f"{scores[lang]:6.3f}" for lang in languages)])
