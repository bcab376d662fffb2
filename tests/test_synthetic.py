"""The synthetic corpus: deterministic, multilingual, grammatical, and in the layouts readers expect."""

import argparse
import json
import re
import statistics
import tarfile
from collections import defaultdict
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_pipelines import synthetic
from data_pipelines.synthetic import eval_sets, samples
from data_pipelines.synthetic.languages import GRAMMARS, LANGUAGES
from data_pipelines.synthetic.scenes import ATTRIBUTE_KINDS, Group, Scene
from mmclip.data.formats import decode
from mmclip.data.shards import read_shard_set
from mmclip.tokenizer import load_tokenizer

SCRIPTS = {  # a character class every caption of the language must use
    "en": r"[A-Za-z]",
    "de": r"[A-Za-zÄÖÜäöüß]",
    "fr": r"[A-Za-zàâçéèêëîïôûùüÿœ]",
    "es": r"[A-Za-záéíóúñü]",
    "ru": r"[\u0400-\u04FF]",
    "zh": r"[\u4E00-\u9FFF]",
    "ja": r"[\u3040-\u30FF]",  # kana: tells Japanese from Chinese
    "hi": r"[\u0900-\u097F]",
    "ar": r"[\u0600-\u06FF]",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("synthetic") / "seed0"
    synthetic.generate(output, synthetic.Plan.parse("tiny"), seed=0, workers=2)
    return output


def records(directory: Path) -> list:
    shard_set = read_shard_set(directory)
    out = []
    for shard in shard_set.shards:
        grouped = defaultdict(dict)
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, field = member.name.split(".", 1)
                grouped[key][field] = tar.extractfile(member).read()
        out += [decode(shard_set.kind, {"__key__": key, **fields}) for key, fields in grouped.items()]
    return out


def test_same_seed_gives_the_same_corpus_with_any_worker_count(corpus, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    synthetic.add_arguments(parser)
    again = tmp_path / "again"
    assert synthetic.run(parser.parse_args(["--output", str(again), "--size", "tiny", "--workers", "1"])) == 0
    assert "train/text_triplet: text_triplet: wrote 200 samples" in capsys.readouterr().out
    files = sorted(p.relative_to(corpus) for p in corpus.rglob("*") if p.is_file() and p.parts[-2] != "tokenizer")
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file() and p.parts[-2] != "tokenizer")
    # Shards included: tar members carry a fixed mtime, so equal content means equal bytes.
    assert all((corpus / f).read_bytes() == (again / f).read_bytes() for f in files)
    assert synthetic.run(parser.parse_args(["--output", str(again), "--size", "tiny"])) == 1  # never overwrites


def test_another_seed_gives_other_samples():
    zero, one = samples.Context(0, LANGUAGES), samples.Context(1, LANGUAGES)
    for name, (_, builder) in samples.TRAIN_SETS.items():
        assert [builder(zero, i) for i in range(3)] != [builder(one, i) for i in range(3)], name
    assert eval_sets.eval_image(zero, 0) != eval_sets.eval_image(one, 0)
    assert eval_sets.eval_page(zero, 0)[0] != eval_sets.eval_page(one, 0)[0]


def test_document_share_is_a_corpus_setting():
    def sources(document_every, builder):
        ctx = samples.Context(0, LANGUAGES, document_every=document_every)
        return [builder(ctx, i).source for i in range(16)]

    for builder in (samples.image_text_short, samples.image_text_long):
        default = sources(samples.DOCUMENT_EVERY, builder)
        assert [i for i, s in enumerate(default) if s == samples.DOCUMENT_SOURCE] == [3, 7, 11, 15]
        assert [i for i, s in enumerate(sources(8, builder)) if s == samples.DOCUMENT_SOURCE] == [7, 15]
        assert set(sources(0, builder)) == {samples.SCENE_SOURCE}
        # Scenes do not move when pages are dropped: sample i is the same scene in both corpora.
        assert builder(samples.Context(0, LANGUAGES, document_every=0), 2) == builder(samples.Context(0, LANGUAGES), 2)


def test_every_language_is_present_in_its_script(corpus):
    for name in ("image_text_short", "image_text_long", "text_pair", "text_triplet"):
        by_language = defaultdict(list)
        for record in records(corpus / "train" / name):
            by_language[record.language].append(record.caption if name.startswith("image") else record.query)
        assert set(by_language) == set(LANGUAGES), name
        for code, texts in by_language.items():
            assert all(re.search(SCRIPTS[code], text) for text in texts), (name, code)


def test_long_captions_are_several_sentences_longer_than_short_ones(corpus):
    short, long = defaultdict(list), defaultdict(list)
    for record in records(corpus / "train" / "image_text_short"):
        short[record.language].append(len(record.caption))
    for record in records(corpus / "train" / "image_text_long"):
        if record.source == samples.SCENE_SOURCE:
            long[record.language].append(len(record.caption))
            if record.language == "en":
                assert len(record.caption.split()) > 50 and record.caption.count(". ") >= 5
    for code in LANGUAGES:
        assert min(long[code]) > 2 * statistics.median(short[code]), code


def test_triplets_have_seven_negatives_each_one_attribute_away(corpus):
    triplets = records(corpus / "train" / "text_triplet")
    for t in triplets:
        assert len(t.negatives) == 7 and len(set(t.negatives)) == 7 and t.positive not in t.negatives
        scene, changed = t.extra["scene"], t.extra["negative_attributes"]
        for attribute, negative in zip(changed, t.extra["negative_scenes"]):
            assert [k for k in scene if scene[k] != negative[k]] == [attribute]
        assert {a.split(".")[-1] for a in changed} == set(ATTRIBUTE_KINDS)  # every kind of change at least once


def test_document_answers_are_printed_in_small_print(corpus):
    pages = [r for r in records(corpus / "train" / "image_text_short") if r.caption_kind == "qa"]
    assert len(pages) >= 10 and len({p.language for p in pages}) >= 5
    for page in pages:
        assert page.caption.endswith(" " + page.extra["answer"])
        x0, y0, x1, y1 = page.extra["answer_box"]
        assert y1 - y0 <= 10 and 720 <= page.height <= 1024  # 7-8 px text on a full page
        pixels = np.asarray(Image.open(BytesIO(page.image)).convert("L"))
        ink, paper = pixels[y0 : y1 + 1, x0 : x1 + 1].min(), np.median(pixels)
        assert paper > 220 and ink < 140, page.key


def test_clip_benchmark_layout(corpus, monkeypatch):
    root = corpus / "eval" / "clip_benchmark"
    names = (root / "xtd10" / "test_image_names.txt").read_text().splitlines()
    assert len(names) >= 32 and all((root / "xtd10" / "images" / n).is_file() for n in names)
    monkeypatch.chdir(root)  # clip_benchmark opens image_paths as given: relative to the root
    for code in LANGUAGES:
        xtd_code = {"ja": "jp"}.get(code, code)
        files = [f"crossmodal3600_captions-{code}.json"]
        files += [f"xtd10-{xtd_code}.json"] if xtd_code in eval_sets.XTD10_LANGUAGES else []
        assert sorted(files) == sorted(
            json.loads((corpus / "corpus.json").read_text())["eval"]["clip_benchmark"]["annotation_files"][code]
        )
        for name in files:
            data = json.loads((root / name).read_text(encoding="utf-8"))
            assert len(data["image_paths"]) == len(data["annotations"]) == len(data["indices"]) == len(names)
            assert Image.open(data["image_paths"][0]).size[0] in (288, 384)  # what XTD10.__getitem__ does
            assert all(re.search(SCRIPTS[code], caption) for caption in data["annotations"])
        captions = (root / "xtd10" / f"test_1kcaptions_{xtd_code}.txt").read_text(encoding="utf-8").splitlines()
        assert captions == data["annotations"]
    assert not (root / "xtd10-hi.json").exists()  # xtd10 has no Hindi: crossmodal3600 serves it


def beir(directory: Path):
    corpus = {row["_id"]: row for row in map(json.loads, (directory / "corpus.jsonl").read_text().splitlines())}
    queries = {row["_id"]: row for row in map(json.loads, (directory / "queries.jsonl").read_text().splitlines())}
    header, *rows = (directory / "qrels" / "test.tsv").read_text().splitlines()
    assert header == "query-id\tcorpus-id\tscore"
    qrels = [row.split("\t") for row in rows]
    assert all(q in queries and d in corpus and s == "1" for q, d, s in qrels)
    assert {q for q, _, _ in qrels} == set(queries)
    return corpus, queries


def test_document_retrieval_layout(corpus):
    root = corpus / "eval" / "documents"
    pages, queries = beir(root)
    assert all((root / page["image"]).is_file() and {"title", "text"} <= set(page) for page in pages.values())
    assert len({q["language"] for q in queries.values()}) >= 5


def test_text_sets_are_parallel_across_languages(corpus):
    scores = []
    for code in LANGUAGES:
        docs, queries = beir(corpus / "eval" / "text_retrieval" / code)
        assert len(docs) == 3 * len(queries) >= 32
        rows = [json.loads(line) for line in (corpus / "eval" / "sts" / f"{code}.jsonl").read_text().splitlines()]
        assert all(re.search(SCRIPTS[code], r["sentence1"]) and 0 <= r["score"] <= 5 for r in rows)
        scores.append([r["score"] for r in rows])
    assert all(s == scores[0] for s in scores) and min(scores[0]) < 2 and max(scores[0]) == 5


def test_tokenizer_covers_every_language(corpus):
    tokenizer = load_tokenizer(corpus / "tokenizer")
    assert len(tokenizer) <= 4000
    for code in LANGUAGES:  # held-out text: none of it was trained on
        rows = [json.loads(line) for line in (corpus / "eval" / "sts" / f"{code}.jsonl").read_text().splitlines()]
        ids = [i for r in rows for i in tokenizer(r["sentence1"])["input_ids"]]
        assert ids.count(tokenizer.unk_token_id) / len(ids) < 0.01, code


def test_corpus_json_matches_the_shard_sets(corpus):
    summary = json.loads((corpus / "corpus.json").read_text())
    assert summary["seed"] == 0 and summary["languages"] == list(LANGUAGES) and summary["size"] == "tiny"
    for name, entry in summary["train"].items():
        shard_set = read_shard_set(corpus / "train" / name)
        assert (shard_set.kind, shard_set.total, len(shard_set.shards)) == (
            entry["kind"],
            entry["samples"],
            entry["shards"],
        )
        assert sum(entry["languages"].values()) == entry["samples"] >= 200
    assert summary["train"]["image_text_short"]["kinds"].keys() == {"short", "qa"}
    assert summary["train"]["image_text_long"]["kinds"].keys() == {"long"}


# One scene per line of grammar that could go wrong: gender, case after numerals and prepositions,
# the Arabic dual, feminine plurals.
RED_CIRCLE_LEFT_OF_BLUE_SQUARES = Scene(
    (Group("circle", "red", "large", 1), Group("square", "blue", "small", 2)), "top", "left_of"
)
YELLOW_STARS_ABOVE_GREEN_HEXAGONS = Scene(
    (Group("star", "yellow", "small", 3), Group("hexagon", "green", "large", 2)), "centre", "above"
)
GOLDEN = {
    "en": (
        "At the top of the image, a large red circle is to the left of two small blue squares.",
        "Two large green hexagons are below three small yellow stars, in the centre of the image.",
    ),
    "de": (
        "Oben im Bild ist ein großer roter Kreis links von zwei kleinen blauen Quadraten.",
        "Zwei große grüne Sechsecke befinden sich in der Bildmitte unter drei kleinen gelben Sternen.",
    ),
    "fr": (
        "En haut de l'image, un grand cercle rouge se trouve à gauche de deux petits carrés bleus.",
        "Deux grands hexagones verts sont au-dessous de trois petites étoiles jaunes, au centre de l'image.",
    ),
    "es": (
        "En la parte superior de la imagen, un círculo rojo grande está a la izquierda de dos cuadrados azules pequeños.",
        "Dos hexágonos verdes grandes están debajo de tres estrellas amarillas pequeñas, en el centro de la imagen.",
    ),
    "ru": (
        "В верхней части изображения большой красный круг находится слева от двух маленьких синих квадратов.",
        "Два больших зелёных шестиугольника находятся ниже трёх маленьких жёлтых звёзд в центре изображения.",
    ),
    "zh": (
        "在图片上方，一个红色的大圆形位于两个蓝色的小正方形的左边。",
        "两个绿色的大六边形在三个黄色的小星形的下方，都位于图片中央。",
    ),
    "ja": (
        "画像の上部では、1つの大きな赤い円が2つの小さな青い正方形の左にあります。",
        "画像の中央には、小さな黄色い星が3つあり、その下に大きな緑の六角形が2つあります。",
    ),
    "hi": (
        "चित्र के ऊपरी भाग में एक बड़ा लाल वृत्त दो छोटे नीले वर्गों के बाईं ओर है।",
        "दो बड़े हरे षट्भुज चित्र के बीच में तीन छोटे पीले तारों के नीचे हैं।",
    ),
    "ar": (
        "في أعلى الصورة دائرة حمراء كبيرة على يسار مربعين أزرقين صغيرين.",
        "يوجد شكلان سداسيان أخضران كبيران تحت ثلاث نجوم صفراء صغيرة في وسط الصورة.",
    ),
}


@pytest.mark.parametrize("code", LANGUAGES)
def test_grammar(code):
    grammar = GRAMMARS[code]
    assert grammar.caption(RED_CIRCLE_LEFT_OF_BLUE_SQUARES, 0) == GOLDEN[code][0]
    assert grammar.caption(YELLOW_STARS_ABOVE_GREEN_HEXAGONS, 1) == GOLDEN[code][1]


def test_tokenizer_spells_chinese_and_japanese_by_character(corpus):
    """A templated corpus would otherwise teach clause-long CJK pieces (mmclip.tokenizer)."""
    tokenizer = load_tokenizer(corpus / "tokenizer")
    for code in ("zh", "ja"):
        rows = [json.loads(line) for line in (corpus / "eval" / "sts" / f"{code}.jsonl").read_text().splitlines()]
        pieces = {p.lstrip("▁") for r in rows for p in tokenizer.tokenize(r["sentence1"])}
        assert max(len(p) for p in pieces if re.search(SCRIPTS[code], p)) == 1, code
    assert any(len(p) >= 5 for p in tokenizer.tokenize("the image circles")), "spaced scripts keep word pieces"


@pytest.mark.parametrize("width, height", [(384, 288), (288, 384)])
def test_shapes_stay_inside_the_central_square(width, height):
    """The eval transform's centre crop (and a 90% training crop) never cuts a stated shape."""
    from data_pipelines.synthetic.render import render_scene

    big = Group("square", "black", "large", 3)
    relation, position = ("left_of", "centre") if width > height else ("above", "centre")
    scene = Scene((big, Group("circle", "black", "large", 3)), position, relation, "light_grey", "plain", width, height)
    pixels = np.asarray(render_scene(scene, np.random.default_rng(0), long_side=192), dtype=np.int16)
    assert pixels.shape[:2] == (height // 2, width // 2)
    margin = (max(width, height) - min(width, height)) // 4  # at half size
    outside = pixels[:, :margin] if width > height else pixels[:margin]
    inside = pixels[:, margin:-margin] if width > height else pixels[margin:-margin]
    assert outside.min() > 150 and inside.min() < 60  # background only / black shapes
