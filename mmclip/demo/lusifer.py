"""``mmclip demo --model lusifer --output DIR``: LUSIFER's two stages end to end on a CPU in minutes.

1. writes a text-only synthetic multilingual corpus into ``DIR/data`` with the synthetic
   generator's own sample builders (no images): plain texts (long scene descriptions, the
   Wikitext-style reconstruction set), query -> positive pairs, triplets with 7 one-attribute hard
   negatives, the held-out ``eval/text_retrieval/{lang}`` BEIR sets, the XLM-R-format encoder
   tokenizer, and a tiny Mistral with its BPE tokenizer (:mod:`data_pipelines.synthetic.text_corpus`);
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
import time
from pathlib import Path

from ..config import CONFIG_DIR as CONFIGS
from .common import run_on_every_core
from .common import stage_overrides as demo_stage_overrides

CONFIG_DIR = CONFIGS / "lusifer"
STAGES = {"align": "demo_align.yaml", "finetune": "demo_finetune.yaml"}


def stage_overrides(stage: str, output: Path, init_from: Path | None, scale: float = 1.0) -> list[str]:
    """A demo stage on the generated corpus, its tokenizers and the tiny Mistral, chained to the last stage."""
    from ..tokenizer import load_tokenizer

    data = output / "data"
    model_overrides = [
        f"encoder.tokenizer={data / 'tokenizer'}", f"encoder.vocab_size={len(load_tokenizer(data / 'tokenizer'))}",
        f"llm_pretrained={data / 'mistral'}", f"llm_tokenizer={data / 'mistral'}",
    ]
    return demo_stage_overrides(CONFIG_DIR / STAGES[stage], output, model_overrides, init_from, scale)


def evaluate(model_dir: Path, data: Path) -> dict[str, float]:
    """nDCG@10 per language of mteb's retrieval evaluation on the held-out text sets."""
    from eval.mteb_tasks import MMCLIPEncoder, local_text_retrieval, run_tasks

    task = local_text_retrieval(data / "eval" / "text_retrieval")
    return run_tasks(MMCLIPEncoder(model_dir), [task])[task.metadata.name]


def main(output: Path, scale: float = 1.0) -> int:
    """The command: into a new directory, on every core."""
    return run_on_every_core(output, lambda: run(output, scale))


def run(output: Path, scale: float = 1.0) -> dict:
    """The demo into ``output``; ``scale`` multiplies the corpus, the LLM's pretraining and the steps."""
    from data_pipelines.synthetic.text_corpus import write_corpus

    from ..export import export
    from ..train import train

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
        log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
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
