"""Held-out evaluation sets, each written in the layout its harness reads (``docs/data.md``).

All come from their own random streams (``randomness.STREAMS``), never from training ones. The
text sets describe the same scenes in every language, so scores compare across languages.

``eval/clip_benchmark/``  image-caption retrieval for clip_benchmark's ``xtd10`` (and
                          ``crossmodal3600``, which knows hi and ar) datasets
``eval/documents/``       page retrieval in BEIR layout, corpus entries pointing at page images
``eval/sts/``             ``{lang}.jsonl``: sentence1, sentence2, score 0-5
``eval/text_retrieval/``  ``{lang}/``: BEIR corpus.jsonl, queries.jsonl, qrels/test.tsv
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path

from . import documents
from .languages import GRAMMARS
from .randomness import pick, rng_for
from .render import encode_jpeg, render_scene
from .samples import Context
from .scenes import agreement, hard_negatives, mutate, sample_scene

# clip_benchmark 1.6.2: datasets/xtd10.py and datasets/crossmodal3600.py, SUPPORTED_LANGUAGES.
XTD10_LANGUAGES = ("de", "en", "es", "fr", "it", "jp", "ko", "pl", "ru", "tr", "zh")
XTD10_CODES = {"ja": "jp"}  # xtd10 calls Japanese "jp"
XM3600_LANGUAGES = (
    "ar", "bn", "cs", "da", "de", "el", "en", "es", "fa", "fi", "fil", "fr", "he", "hi", "hr", "hu", "id", "it",
    "ja", "ko", "mi", "nl", "no", "pl", "pt", "quz", "ro", "ru", "sv", "sw", "te", "th", "tr", "uk", "vi", "zh",
)  # fmt: skip
RETRIEVAL_DISTRACTORS = 2  # hard negatives of each query's scene in the text corpus

Mapper = Callable[[Callable[[int], object], int], Iterator]  # (builder, count) -> results in index order


def write_eval_sets(root: Path, ctx: Context, sizes: dict[str, int], imap: Mapper) -> dict:
    """Write every held-out set under ``root``; their counts, for ``corpus.json``."""
    return {
        "clip_benchmark": write_clip_benchmark(
            root / "clip_benchmark", ctx, imap(partial(eval_image, ctx), sizes["images"])
        ),
        "documents": write_documents(root / "documents", imap(partial(eval_page, ctx), sizes["documents"])),
        "sts": write_sts(root / "sts", ctx, sizes["sts"]),
        "text_retrieval": write_text_retrieval(root / "text_retrieval", ctx, sizes["text_retrieval"]),
    }


def eval_image(ctx: Context, index: int) -> tuple[bytes, dict[str, str]]:
    """Image ``index`` of the retrieval set: JPEG bytes and its caption in every language."""
    rng = rng_for(ctx.seed, "eval_images", index)
    scene = sample_scene(rng, pair=True)  # pairs: far more distinct captions than single groups
    template = int(rng.integers(2))
    jpeg = encode_jpeg(render_scene(scene, rng, ctx.image_side), quality=90)
    return jpeg, {code: GRAMMARS[code].caption(scene, template) for code in ctx.languages}


def eval_page(ctx: Context, index: int) -> tuple[bytes, dict[str, str], list[tuple[str, str]]]:
    """Page ``index`` of the document set: JPEG bytes, its facts, and one (language, field) per lookup."""
    rng = rng_for(ctx.seed, "eval_documents", index)
    page = documents.make_page(rng)
    queries = [(pick(rng, ctx.languages), field) for field in documents.LOOKUPS]
    return encode_jpeg(page.image, quality=90), page.fields, queries


def write_clip_benchmark(root: Path, ctx: Context, items: Iterable[tuple[bytes, dict[str, str]]]) -> dict:
    """clip_benchmark's multilingual retrieval layout, as its ``xtd10`` builder leaves it.

    ``build_dataset("xtd10", root, language=L)`` opens ``root/xtd10-L.json`` (``image_paths``,
    ``annotations``: one caption per image, ``indices``) and only downloads when that file is
    missing; it opens ``image_paths`` as given, so they are relative to ``root`` and the harness
    runs from there. ``crossmodal3600_captions-L.json`` is the same file under the name the
    ``crossmodal3600`` dataset reads, for the languages xtd10 lacks (hi, ar). The images, the
    index file and per-language caption files mirror the XTD10 release for other tools.
    """
    images = root / "xtd10" / "images"
    images.mkdir(parents=True)
    names, captions = [], {code: [] for code in ctx.languages}
    for index, (jpeg, by_language) in enumerate(items):
        names.append(f"synthetic_{index:06d}.jpg")
        (images / names[-1]).write_bytes(jpeg)
        for code, caption in by_language.items():
            captions[code].append(caption)
    _write_lines(root / "xtd10" / "test_image_names.txt", names)
    paths = [f"xtd10/images/{name}" for name in names]
    files = {}
    for code, lines in captions.items():
        annotation = {"image_paths": paths, "annotations": lines, "indices": list(range(len(lines)))}
        xtd_code = XTD10_CODES.get(code, code)
        _write_lines(root / "xtd10" / f"test_1kcaptions_{xtd_code}.txt", lines)
        names_for_code = [f"xtd10-{xtd_code}.json"] if xtd_code in XTD10_LANGUAGES else []
        names_for_code += [f"crossmodal3600_captions-{code}.json"] if code in XM3600_LANGUAGES else []
        for name in names_for_code:
            _write_json(root / name, annotation)
        files[code] = names_for_code
    return {"images": len(names), "annotation_files": files}


def write_documents(root: Path, pages: Iterable[tuple[bytes, dict[str, str], list[tuple[str, str]]]]) -> dict:
    """BEIR layout with images: corpus entries point at ``images/<id>.jpg`` (relative to ``root``)."""
    (root / "images").mkdir(parents=True)
    corpus, queries, qrels = [], [], []
    for index, (jpeg, fields, lookups) in enumerate(pages):
        page_id = f"page-{index:06d}"
        (root / "images" / f"{page_id}.jpg").write_bytes(jpeg)
        corpus.append({"_id": page_id, "title": "", "text": "", "image": f"images/{page_id}.jpg"})
        for language, field in lookups:
            query_id = f"q-{index:06d}-{field}"
            text = documents.lookup(field, fields[field], language)
            queries.append({"_id": query_id, "text": text, "language": language, "field": field})
            qrels.append((query_id, page_id, 1))
    _write_beir(root, corpus, queries, qrels)
    return {"pages": len(corpus), "queries": len(queries)}


def write_sts(root: Path, ctx: Context, count: int) -> dict:
    """Pairs of captions whose scenes share a known share of attributes: score = 5 x that share.

    Sentence 2 always uses the other template, so a score of 5 is never an identical string.
    """
    rows = []
    for index in range(count):
        rng = rng_for(ctx.seed, "eval_sts", index)
        first = sample_scene(rng, pair=True)
        changed = int(rng.integers(len(first.caption_attributes()) + 1))
        second = mutate(first, changed, rng)
        rows.append((first, second, round(5 * agreement(first, second), 2)))
    root.mkdir(parents=True)
    for code in ctx.languages:
        grammar = GRAMMARS[code]
        lines = [
            {"sentence1": grammar.caption(a, 0), "sentence2": grammar.caption(b, 1), "score": score}
            for a, b, score in rows
        ]
        _write_jsonl(root / f"{code}.jsonl", lines)
    return {code: count for code in ctx.languages}


def write_text_retrieval(root: Path, ctx: Context, count: int) -> dict:
    """Caption -> paraphrase retrieval; each query's scene also adds hard-negative distractors."""
    scenes = []
    for index in range(count):
        rng = rng_for(ctx.seed, "eval_text_retrieval", index)
        scene = sample_scene(rng, pair=True)
        scenes.append((scene, [negative for _, negative in hard_negatives(scene, rng, RETRIEVAL_DISTRACTORS)]))
    for code in ctx.languages:
        grammar = GRAMMARS[code]
        corpus, queries, qrels = [], [], []
        for index, (scene, distractors) in enumerate(scenes):
            queries.append({"_id": f"q-{index:06d}", "text": grammar.caption(scene, 0)})
            for rank, doc_scene in enumerate([scene, *distractors]):
                corpus.append({"_id": f"doc-{index:06d}-{rank}", "title": "", "text": grammar.caption(doc_scene, 1)})
            qrels.append((f"q-{index:06d}", f"doc-{index:06d}-0", 1))
        _write_beir(root / code, corpus, queries, qrels)
    return {code: {"queries": count, "corpus": count * (1 + RETRIEVAL_DISTRACTORS)} for code in ctx.languages}


def _write_beir(root: Path, corpus: list[dict], queries: list[dict], qrels: list[tuple[str, str, int]]) -> None:
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    _write_jsonl(root / "corpus.jsonl", corpus)
    _write_jsonl(root / "queries.jsonl", queries)
    _write_lines(
        root / "qrels" / "test.tsv", ["query-id\tcorpus-id\tscore", *("\t".join(map(str, row)) for row in qrels)]
    )


def _write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    _write_lines(path, [json.dumps(row, ensure_ascii=False) for row in rows])


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
