"""The builder on real inputs, each run as a command from another working directory: a relative image
folder, one image captioned in two languages, an all-skipped build (non-zero exit), WebDataset
tars (img2dataset's folder, a pattern, a loopback http URL) and img2dataset's parquet output."""

import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from .conftest import REPO
from .loopback import serve
from .test_data_pipelines import CAPTIONS, image_bytes, read_records, skipped
from .test_real_data import I2D, I2D_PATTERN, I2D_SAMPLES

ENGLISH, GERMAN = list(CAPTIONS)[:2]


def build(cwd, *argv):
    """``python -m data_pipelines build ...`` run in ``cwd`` (not the repository)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "data_pipelines", "build", *map(str, argv), "--workers", "1"]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_relative_image_folder_builds_from_the_folder_above(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, caption in enumerate(CAPTIONS):
        (photos / f"img{i:03d}.jpg").write_bytes(image_bytes(i, (64, 48)))
        (photos / f"img{i:03d}.txt").write_text(caption)
    result = build(tmp_path, "photos", "shards/mine")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"image_text: wrote {len(CAPTIONS)} samples") and "skipped 0" in result.stdout
    # And a JSONL's relative paths resolve against the JSONL's folder, not the working directory.
    rows = [{"image": f"photos/img{i:03d}.jpg", "caption": caption} for i, caption in enumerate(CAPTIONS)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (tmp_path / "elsewhere").mkdir()
    result = build(tmp_path / "elsewhere", "../data.jsonl", "out")
    assert result.returncode == 0, result.stderr
    assert len(read_records(tmp_path / "elsewhere" / "out")) == len(CAPTIONS)


@pytest.mark.slow
def test_one_image_with_captions_in_two_languages_stays_two_samples(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "cube.jpg").write_bytes(image_bytes(0, (64, 48)))
    (tmp_path / "in" / "ball.jpg").write_bytes(image_bytes(1, (64, 48)))
    rows = [
        {"image": "cube.jpg", "caption": ENGLISH},
        {"image": "cube.jpg", "caption": GERMAN},
        {"image": "cube.jpg", "caption": ENGLISH},  # the same image with the same caption: a duplicate
        {"image": "ball.jpg", "caption": ENGLISH},
    ]
    (tmp_path / "in" / "data.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    result = build(tmp_path, "in/data.jsonl", "both")
    assert result.returncode == 0, result.stderr
    records = read_records(tmp_path / "both")
    assert [(r.caption, r.language) for r in records] == [(ENGLISH, "en"), (GERMAN, "de"), (ENGLISH, "en")]
    assert skipped(tmp_path / "both") == {"000000002": "duplicate_image"}
    result = build(tmp_path, "in/data.jsonl", "one", "--one-caption-per-image")
    assert result.returncode == 0, result.stderr
    assert [r.caption for r in read_records(tmp_path / "one")] == [ENGLISH, ENGLISH]
    assert skipped(tmp_path / "one") == {"000000001": "duplicate_image", "000000002": "duplicate_image"}


@pytest.mark.slow
def test_an_all_skipped_build_exits_non_zero_naming_reasons_and_an_example(tmp_path):
    (tmp_path / "in").mkdir()
    rows = [{"image": f"gone{i}.jpg", "caption": ENGLISH} for i in range(5)] + [{"image": "x.jpg", "caption": "short"}]
    (tmp_path / "in" / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = build(tmp_path, "in/data.jsonl", "out")
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()[-1:]
    assert "wrote no sample, skipped 6 of 6" in line and "missing_image 5, short_caption 1" in line
    assert f"e.g. 000000000: {tmp_path / 'in' / 'gone0.jpg'}" in line and "--accept-skips" in line
    result = build(tmp_path, "in/data.jsonl", "accepted", "--accept-skips")
    assert result.returncode == 0 and "skipped 6" in result.stdout
    # More than half skipped, but something written: the same.
    (tmp_path / "in" / "x.jpg").write_bytes(image_bytes(0, (64, 48)))
    rows[-1]["caption"] = GERMAN
    (tmp_path / "in" / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = build(tmp_path, "in/data.jsonl", "most")
    assert result.returncode == 1 and "wrote 1 samples, skipped 5 of 6" in result.stderr


@pytest.mark.slow
def test_webdataset_sources_rebuild_with_the_filters(tmp_path):
    # img2dataset's folder: its tars (not the metadata-only parquet beside them)
    result = build(tmp_path, I2D, "i2d", "--index-cache", tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    records = read_records(tmp_path / "i2d")
    assert len(records) == I2D_SAMPLES and {r.language for r in records} >= {"en", "de", "fr", "ru", "es"}
    # A pattern over http, re-filtered to German, with the caption taken from the JSON metadata.
    with serve(I2D) as url:
        result = build(
            tmp_path, f"{url}/{I2D_PATTERN}", "de", "--languages", "de", "--accept-skips",
            "--fields", '{"caption": "json:caption"}', "--index-cache", tmp_path / "cache",
        )
    assert result.returncode == 0, result.stderr
    german = read_records(tmp_path / "de")
    assert german and all(r.language == "de" and r.caption.startswith("ein roter") for r in german)
    assert {r.key for r in german} <= {r.key for r in records}  # the tars' own keys
    assert set(skipped(tmp_path / "de").values()) == {"language_not_allowed"}
    result = build(tmp_path, f"{tmp_path}/nothing/{{0..3}}.tar", "none")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "no such file" in result.stderr


def test_img2dataset_parquet_output_builds_from_its_image_column(tmp_path):
    rows = {
        "key": ["000000000", "000000001", "000000002"],
        "url": ["http://a/0.jpg", "http://a/1.jpg", "http://a/2.jpg"],
        "status": ["success", "success", "failed_to_download"],
        "caption": [ENGLISH, GERMAN, ENGLISH],
        "jpg": [image_bytes(0, (64, 48)), image_bytes(1, (64, 48)), None],
    }
    (tmp_path / "out").mkdir()
    pq.write_table(pa.table(rows), tmp_path / "out" / "00000.parquet")
    result = build(tmp_path, "out", "shards", "--key-field", "key")
    assert result.returncode == 0, result.stderr
    assert [r.caption for r in read_records(tmp_path / "shards")] == [ENGLISH, GERMAN]
    assert skipped(tmp_path / "shards") == {"000000002": "missing_field"}
