"""data_pipelines: build round trips for every input format and kind, every filter's skip reason,
the similarity filter against independently computed scores, and inspect on damaged shards."""

import argparse
import csv
import json
import re
import subprocess
import sys
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from data_pipelines import build, inspect_shards
from data_pipelines.filters import count_words, top_fraction
from mmclip import create_model
from mmclip.data.formats import decode
from mmclip.data.shards import read_shard_set
from mmclip.data.transforms import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from .conftest import REPO, TINY

CAPTIONS = {  # caption -> the language py3langid finds in it
    "a red cube on a blue table next to a small green ball": "en",
    "ein roter Würfel auf einem blauen Tisch neben einem Ball": "de",
    "un chat noir assis sur un canapé rouge dans le salon": "fr",
    "一只黑色的猫坐在红色的沙发上": "zh",
}
# (file name, size): one to downscale per format, and two small ones stored as they are.
IMAGES = [("img0.jpg", (500, 400)), ("img1.jpg", (120, 90)), ("img2.png", (600, 300)), ("img3.webp", (64, 64))]


def image_bytes(seed: int, size: tuple[int, int], image_format: str = "JPEG") -> bytes:
    """Noise: every seed has its own perceptual hash."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format)
    return buffer.getvalue()


def run_build(*argv, workers: int = 1) -> int:
    parser = argparse.ArgumentParser()
    build.add_arguments(parser)
    return build.run(parser.parse_args([str(a) for a in argv] + ["--workers", str(workers)]))


def read_records(directory: Path) -> list:
    shard_set = read_shard_set(directory)
    samples = wds.WebDataset([str(p) for p in shard_set.shards], shardshuffle=False)
    return [decode(shard_set.kind, sample) for sample in samples]


def skipped(directory: Path) -> dict[str, str]:
    lines = (directory / "skipped.jsonl").read_text(encoding="utf-8").splitlines()
    return {entry["key"]: entry["reason"] for entry in map(json.loads, lines)}


def write_input(input_format: str, rows: list[dict], directory: Path) -> Path:
    """``rows`` in ``input_format``; an ``image`` field names a file in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    if input_format == "jsonl":
        path = directory / "data.jsonl"
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    elif input_format == "csv":
        path = directory / "data.csv"
        with open(path, "w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()} for row in rows)
    elif input_format == "parquet":  # images as bytes
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = directory / "data.parquet"
        embedded = [row if image is None else {**row, "image": image} for row, image in _image_files(rows, directory)]
        pq.write_table(pa.Table.from_pylist(embedded), path)
    elif input_format == "hf":  # images as a datasets.Image feature
        import datasets

        path = directory / "hf"
        embedded = [
            row if image is None else {**row, "image": {"bytes": image, "path": None}}
            for row, image in _image_files(rows, directory)
        ]
        dataset = datasets.Dataset.from_list(embedded)
        if "image" in rows[0]:
            dataset = dataset.cast_column("image", datasets.Image())
        dataset.save_to_disk(str(path))
    else:  # folder: images with caption files beside them
        path = directory / "folder"
        path.mkdir()
        for row in rows:
            (path / row["image"]).write_bytes((directory / row["image"]).read_bytes())
            (path / row["image"]).with_suffix(".txt").write_text(row["caption"], encoding="utf-8")
    return path


def _image_files(rows: list[dict], directory: Path):
    """(row, its image file's bytes); rows without an image (text kinds) come back as they are."""
    for row in rows:
        yield (row, (directory / row["image"]).read_bytes()) if "image" in row else (row, None)


@pytest.fixture
def images(tmp_path) -> dict[str, bytes]:
    formats = {".jpg": "JPEG", ".png": "PNG", ".webp": "WEBP"}
    data = {name: image_bytes(seed, size, formats[Path(name).suffix]) for seed, (name, size) in enumerate(IMAGES)}
    for name, content in data.items():
        (tmp_path / name).write_bytes(content)
    return data


@pytest.mark.parametrize("input_format", ["jsonl", "csv", "parquet", "folder", "hf"])
def test_build_image_text_round_trip(tmp_path, images, input_format):
    rows = [{"image": name, "caption": caption} for name, caption in zip(images, CAPTIONS)]
    rows[1]["language"] = rows[3]["language"] = ""  # identified; the others are given
    for row, language in zip(rows, CAPTIONS.values()):
        row.setdefault("language", language if input_format != "folder" else None)
    rows = [{k: v for k, v in row.items() if v is not None} for row in rows]
    source = write_input(input_format, rows, tmp_path)
    assert run_build(source, tmp_path / "shards", "--shard-max-samples", 3) == 0

    records = read_records(tmp_path / "shards")
    assert read_shard_set(tmp_path / "shards").counts == (3, 1)
    assert [r.key for r in records] == [f"{i:09d}" for i in range(4)]
    assert [r.caption for r in records] == list(CAPTIONS)
    assert [r.language for r in records] == list(CAPTIONS.values())
    assert {r.source for r in records} == {source.stem} and {r.caption_kind for r in records} == {"short"}
    for record, (name, size) in zip(records, IMAGES):
        stored = Image.open(BytesIO(record.image))
        assert record.image_format == name.split(".")[1] and stored.format == build.PIL_FORMATS[record.image_format]
        assert stored.size == (record.width, record.height) and max(stored.size) <= 384
        if max(size) <= 384:  # never upscaled, stored untouched
            assert record.image == images[name]
        else:
            assert max(stored.size) == 384 and abs(stored.size[0] / stored.size[1] - size[0] / size[1]) < 0.01


TEXT_ROWS = {
    "text_pair": [
        {"query": "красный куб", "positive": "a red cube", "language": "ru"},
        {"query": "where is the blue ball", "positive": "The blue ball lies under the table.", "language": "en"},
    ],
    "text_triplet": [
        {"query": "红色立方体", "positive": "红色立方体在左边", "negatives": [f"负例 {i}" for i in range(7)], "language": "zh"},
        {"query": "green cone", "positive": "a green cone", "negatives": ["a red cone", "a cube"], "language": "en"},
    ],
}


@pytest.mark.parametrize("input_format", ["jsonl", "csv", "parquet", "hf"])
@pytest.mark.parametrize("kind", ["text_pair", "text_triplet"])
def test_build_text_round_trip(tmp_path, kind, input_format):
    rows = TEXT_ROWS[kind]
    source = write_input(input_format, rows, tmp_path)
    assert run_build(source, tmp_path / "shards", "--kind", kind, "--pair-kind", "translation") == 0
    records = read_records(tmp_path / "shards")
    assert [r.kind for r in records] == [kind] * len(rows)
    assert [{k: getattr(r, k) for k in rows[0]} for r in records] == rows
    if kind == "text_pair":
        assert {r.pair_kind for r in records} == {"translation"}


def test_bad_negatives_are_skipped(tmp_path):
    rows = [
        {"query": "a", "positive": "b", "negatives": []},
        {"query": "a", "positive": "b", "negatives": "not a JSON list"},
        {"query": "a", "positive": "b", "negatives": ["fine", "  "]},
    ]
    run_build(write_input("csv", rows, tmp_path), tmp_path / "shards", "--kind", "text_triplet")
    assert skipped(tmp_path / "shards") == {f"00000000{i}": "bad_negatives" for i in range(3)}


def test_qa_and_wit_style_captions(tmp_path, images):
    qa = [{"image": "img1.jpg", "q": "What lies on the blue table?", "a": "A red cube."}]
    wit = {
        "image": "img3.webp",
        "caption": "Golden Gate Bridge",
        "page_title": "Bridges of California",
        "section_title": "",
        "description": "A suspension bridge across the strait.",
        "alt": "Golden Gate Bridge",
    }
    qa_input = write_input("jsonl", qa, tmp_path / "qa")
    qa_flags = ["--image-root", tmp_path, "--question-field", "q", "--answer-field", "a"]
    run_build(qa_input, tmp_path / "qa-shards", *qa_flags)
    wit_input = write_input("jsonl", [wit], tmp_path / "wit")
    fields = "caption,page_title,section_title,description,alt"
    run_build(wit_input, tmp_path / "wit-shards", "--image-root", tmp_path, "--long-caption-fields", fields)
    (qa_record,) = read_records(tmp_path / "qa-shards")
    assert (qa_record.caption, qa_record.caption_kind) == ("What lies on the blue table? A red cube.", "qa")
    (wit_record,) = read_records(tmp_path / "wit-shards")
    # empty section title dropped, the alt text repeating the caption kept once
    expected = "Golden Gate Bridge\nBridges of California\nA suspension bridge across the strait."
    assert (wit_record.caption, wit_record.caption_kind) == (expected, "long")


def test_every_filter_skips_with_its_reason(tmp_path, images, capsys):
    good = "a red cube on a blue table next to a small green ball"
    files = {
        "wide.jpg": image_bytes(10, (400, 100)),
        "big.jpg": image_bytes(11, (400, 300)),
        "corrupt.jpg": b"this is not an image at all",
        "truncated.jpg": image_bytes(12, (200, 200))[:1500],
        "empty.jpg": b"",
        "copy.jpg": images["img1.jpg"],
        "cat.jpg": image_bytes(13, (80, 80)),
        "de.jpg": image_bytes(14, (80, 80)),
        "zxx.jpg": image_bytes(15, (80, 80)),
        "dupkey.jpg": image_bytes(16, (80, 80)),
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    rows = [
        {"id": "good", "image": "img1.jpg", "caption": good, "language": "en"},
        {"id": "cjk-good", "image": "cat.jpg", "caption": "一只黑色的猫坐在红色的沙发上"},  # 7 words
        {"id": "short", "image": "img0.jpg", "caption": "a red cube", "language": "en"},
        {"id": "cjk-short", "image": "img2.png", "caption": "一只猫", "language": "zh"},  # 2 words
        {"id": "wide", "image": "wide.jpg", "caption": good, "language": "en"},
        {"id": "bomb", "image": "big.jpg", "caption": good, "language": "en"},
        {"id": "german", "image": "de.jpg", "caption": "ein roter Würfel auf einem blauen Tisch neben einem Ball"},
        {"id": "unsure", "image": "zxx.jpg", "caption": "zxq vbn qwp rrt kkl"},
        {"id": "copy", "image": "copy.jpg", "caption": good, "language": "en"},
        {"id": "corrupt", "image": "corrupt.jpg", "caption": good, "language": "en"},
        {"id": "truncated", "image": "truncated.jpg", "caption": good, "language": "en"},
        {"id": "empty", "image": "empty.jpg", "caption": good, "language": "en"},
        {"id": "missing", "image": "nowhere.jpg", "caption": good, "language": "en"},
        {"id": "blank", "image": "img3.webp", "caption": "   ", "language": "en"},
        {"id": "no-caption", "image": "img3.webp", "language": "en"},
        {"id": "good", "image": "dupkey.jpg", "caption": good, "language": "en"},
    ]
    lines = [json.dumps(row, ensure_ascii=False).encode() for row in rows]
    lines.append(json.dumps({"id": "latin1", "image": "img3.webp", "caption": "café au lait sur la table"}).encode())
    lines[-1] = lines[-1].replace(b"caf\\u00e9", b"caf\xe9")  # raw Latin-1 byte: not UTF-8
    lines.append(b"{not json")
    (tmp_path / "data.jsonl").write_bytes(b"\n".join(lines) + b"\n")

    flags = ["--key-field", "id", "--languages", "en,zh", "--min-language-confidence", 0.9]
    flags += ["--max-image-pixels", 100_000, "--accept-skips"]  # 2 of 18 kept: on purpose
    assert run_build(tmp_path / "data.jsonl", tmp_path / "shards", *flags) == 0
    assert [r.key for r in read_records(tmp_path / "shards")] == ["good", "cjk-good"]
    assert skipped(tmp_path / "shards") == {
        "short": "short_caption",
        "cjk-short": "short_caption",
        "wide": "aspect_ratio",
        "bomb": "decompression_bomb",
        "german": "language_not_allowed",
        "unsure": "language_not_allowed",  # zxx ("no language") is not allowed either
        "copy": "duplicate_image",
        "corrupt": "corrupt_image",
        "truncated": "corrupt_image",
        "empty": "empty_image",
        "missing": "missing_image",
        "blank": "empty_text",
        "no-caption": "missing_field",
        "good": "duplicate_key",
        "latin1": "non_utf8_text",
        "000000017": "bad_json",
    }
    summary = capsys.readouterr().out.strip()
    assert re.fullmatch(
        r"image_text: wrote 2 samples in 1 shards \(\d+\.\d MB\); skipped 16 \(aspect_ratio 1, bad_json 1, "
        r"corrupt_image 2, decompression_bomb 1, duplicate_image 1, duplicate_key 1, empty_image 1, empty_text 1, "
        r"language_not_allowed 2, missing_field 1, missing_image 1, non_utf8_text 1, short_caption 2\)",
        summary,
    )


def test_language_confidence_and_pil_bomb_guard(tmp_path, images, monkeypatch):
    rows = [
        {"image": "img0.jpg", "caption": "zxq vbn qwp rrt kkl"},  # identified as zxx, p = 0.84
        {"image": "img1.jpg", "caption": "ein roter Würfel auf einem blauen Tisch neben einem Ball"},
    ]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # PIL's own guard: img0 has 20x that
    run_build(write_input("jsonl", rows, tmp_path), tmp_path / "shards", "--max-image-pixels", 0)
    assert skipped(tmp_path / "shards") == {"000000000": "decompression_bomb"}
    monkeypatch.undo()
    run_build(tmp_path / "data.jsonl", tmp_path / "shards2", "--min-language-confidence", 0.9)
    assert skipped(tmp_path / "shards2") == {"000000000": "low_language_confidence"}
    assert [r.language for r in read_records(tmp_path / "shards2")] == ["de"]


@pytest.mark.parametrize("input_format", ["jsonl", "csv", "folder"])
def test_non_utf8_captions_are_skipped(tmp_path, images, input_format):
    caption = "un café noir sur une table en bois".encode("latin-1")
    if input_format == "folder":
        (tmp_path / "folder").mkdir()
        (tmp_path / "folder" / "a.jpg").write_bytes(images["img1.jpg"])
        (tmp_path / "folder" / "a.txt").write_bytes(caption)
        (tmp_path / "folder" / "b.jpg").write_bytes(images["img0.jpg"])  # no caption file
        source = tmp_path / "folder"
    else:
        source = tmp_path / f"data.{input_format}"
        header = b"image,caption\n" if input_format == "csv" else b""
        json_row = b'{"image": "img1.jpg", "caption": "' + caption + b'"}'
        row = b"img1.jpg," + caption if input_format == "csv" else json_row
        source.write_bytes(header + row + b"\n")
    assert run_build(source, tmp_path / "shards", "--accept-skips") == 0  # nothing written: on purpose
    expected = {"000000000": "non_utf8_text"} | ({"000000001": "missing_field"} if input_format == "folder" else {})
    assert skipped(tmp_path / "shards") == expected


def test_exif_rotation_is_applied_when_reencoding(tmp_path):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 500, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    image.save(tmp_path / "phone.jpg", exif=exif)
    rows = [{"image": "phone.jpg", "caption": "a photo taken with a phone held upright", "language": "en"}]
    run_build(write_input("jsonl", rows, tmp_path), tmp_path / "shards", "--max-side", 100)
    (record,) = read_records(tmp_path / "shards")
    assert (record.width, record.height) == (60, 100) and record.image_format == "jpg"


def test_similarity_filter_keeps_the_top_fraction_of_the_models_scores(tmp_path):
    from torchvision import transforms

    from data_pipelines.synthetic.tokenizer import train_tokenizer
    from mmclip.tokenizer import load_tokenizer

    words = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
    captions = [f"a photo of pattern {word} with many small coloured dots" for word in words]
    train_tokenizer(captions * 5, 300, tmp_path / "tokenizer")
    rows = []
    for i, caption in enumerate(captions):
        (tmp_path / f"{i}.png").write_bytes(image_bytes(100 + i, (40 + 8 * i, 60), "PNG"))
        rows.append({"image": f"{i}.png", "caption": caption, "language": "en"})
    flags = ["--similarity-model", TINY, "--similarity-tokenizer", tmp_path / "tokenizer", "--similarity-keep", 0.3]
    assert run_build(write_input("jsonl", rows, tmp_path), tmp_path / "shards", *flags) == 0

    # The same scores, computed here with torchvision: eval transform, normalised embeddings, cosine.
    torch.manual_seed(0)  # the builder seeds a config without weights the same way
    model = create_model(TINY).eval()
    tokenizer = load_tokenizer(tmp_path / "tokenizer")
    size = model.config.vision.image_size
    transform = transforms.Compose(
        [
            transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
        ]
    )
    pixels = torch.stack([transform(Image.open(tmp_path / row["image"]).convert("RGB")) for row in rows])
    tokens = tokenizer(captions, padding=True, truncation=True, max_length=77, return_tensors="pt")
    with torch.no_grad():
        scores = (
            model.encode_image(pixels, normalize=True)
            * model.encode_text(tokens["input_ids"], tokens["attention_mask"], normalize=True)
        ).sum(-1)
    best = sorted(range(len(rows)), key=lambda i: -scores[i])[:3]
    assert [r.key for r in read_records(tmp_path / "shards")] == [f"{i:09d}" for i in sorted(best)]
    assert skipped(tmp_path / "shards") == {f"{i:09d}": "low_similarity" for i in range(10) if i not in best}


@pytest.mark.parametrize(
    "text, words",
    [
        ("a red cube, on the table!", 6),
        ("一只猫", 2),
        ("一只黑色的猫坐在红色的沙发上", 7),
        ("แมวสีดำนั่งอยู่บนโซฟาสีแดง", 7),  # 26 characters, 4 a word
        ("iPhone 手机 -- 2024", 3),
    ],
)
def test_count_words(text, words):
    assert count_words(text) == words


def test_top_fraction_rounds_half_up_and_keeps_earlier_ties():
    assert top_fraction([0.1, 0.5, 0.3, 0.5], 0.5) == {1, 3}
    assert top_fraction([0.1, 0.5, 0.3, 0.5], 0.25) == {1}
    assert top_fraction([0.1, 0.5, 0.3], 0.5) == {1, 2}


def test_reading_and_inspecting_shards_does_not_import_transformers():
    # Its import is most of a short command's time (data_pipelines inspect took 14 s, 9.5 s without);
    # mmclip.data's loader and the tokenizer load it when they are used.
    code = (
        "import sys, data_pipelines.inspect_shards, data_pipelines.build, mmclip.data.stream\n"
        "from mmclip.data import DataConfig, ImageTransform\n"
        "assert 'transformers' not in sys.modules, sorted(m for m in sys.modules if m.startswith('mmclip'))\n"
        "from mmclip.data import MultiStreamLoader\n"
        "assert 'transformers' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_inspect_reports_counts_skips_and_damaged_shards(tmp_path, images, capsys):
    rows = [{"image": name, "caption": caption} for name, caption in zip(images, CAPTIONS)]
    rows.append({"image": "img0.jpg", "caption": "too short"})
    shards = tmp_path / "shards"
    run_build(write_input("jsonl", rows, tmp_path), shards, "--shard-max-samples", 2)
    texts = tmp_path / "texts"
    run_build(write_input("jsonl", TEXT_ROWS["text_pair"], tmp_path / "t"), texts, "--kind", "text_pair")
    capsys.readouterr()

    # By hand: garble the image of the first sample of shard 0 and cut shard 1 short.
    first, second = read_shard_set(shards).shards
    samples = list(wds.WebDataset(str(first), shardshuffle=False))
    samples[0]["jpg"] = b"\xff\xd8 garbage"
    with wds.TarWriter(str(first)) as writer:
        for sample in samples:
            writer.write({k: v for k, v in sample.items() if not k.startswith("__") or k == "__key__"})
    second.write_bytes(second.read_bytes()[:2000])

    assert inspect_shards.run(argparse.Namespace(directories=[shards, texts, tmp_path / "none"], json=True)) == 1
    result = json.loads(capsys.readouterr().out)
    image_set, text_set, missing = result["shard_sets"]
    assert image_set["samples"] == 1 and image_set["languages"] == {"de": 1}
    assert image_set["lengths"] == {"caption": {"10-19": 1}}
    assert image_set["skipped"] == [{"key": "000000004", "reason": "short_caption", "detail": "2 words < 5"}]
    assert [(p["shard"], p["key"], p["reason"]) for p in image_set["problems"]] == [
        (first.name, "000000000", "corrupt_image"),
        (second.name, None, "unreadable_tar"),
        (second.name, "000000002", "missing_image"),  # the files of the sample cut in half that made it
        (second.name, None, "count_mismatch"),
    ]
    assert "unexpected end of data" in image_set["problems"][1]["detail"]
    assert text_set["samples"] == 2 and text_set["problems"] == [] and text_set["languages"] == {"ru": 1, "en": 1}
    assert text_set["lengths"] == {"query": {"<5": 1, "5-9": 1}, "positive": {"<5": 1, "5-9": 1}}
    assert [p["reason"] for p in missing["problems"]] == ["bad_manifest"]
    assert result["samples_per_kind"] == {"image_text": 1, "text_pair": 2, "text_triplet": 0, "text": 0}

    assert inspect_shards.run(argparse.Namespace(directories=[shards], json=False)) == 1
    text = capsys.readouterr().out
    assert "000000004  short_caption  2 words < 5" in text and "000000000  corrupt_image" in text


def test_parallel_build_matches_in_process_build(tmp_path, images):
    rows = [{"image": name, "caption": caption} for name, caption in zip(images, CAPTIONS)] * 3
    source = write_input("jsonl", rows, tmp_path)
    run_build(source, tmp_path / "serial", "--no-dedup", "--chunk-size", 1)
    run_build(source, tmp_path / "parallel", "--no-dedup", "--chunk-size", 1, workers=2)
    assert read_records(tmp_path / "parallel") == read_records(tmp_path / "serial")
    assert len(read_records(tmp_path / "serial")) == 12


def test_command_line_end_to_end(tmp_path, images):
    rows = [{"image": name, "caption": caption} for name, caption in zip(images, CAPTIONS)]
    source = write_input("jsonl", rows + [{"image": "img0.jpg", "caption": "a copy of the first image"}], tmp_path)
    command = [sys.executable, "-m", "data_pipelines"]
    # Another caption of a seen image stays a sample unless asked: here one caption per image is asked.
    build_command = [*command, "build", source, tmp_path / "shards", "--workers", "2", "--one-caption-per-image"]
    built = subprocess.run(build_command, cwd=REPO, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    assert built.stdout.startswith("image_text: wrote 4 samples in 1 shards") and "duplicate_image 1" in built.stdout
    assert "rows/s" in built.stderr  # the progress bar
    inspected = subprocess.run([*command, "inspect", tmp_path / "shards"], cwd=REPO, capture_output=True, text=True)
    assert inspected.returncode == 0 and "duplicate_image" in inspected.stdout
