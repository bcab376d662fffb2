"""``python -m data_pipelines build INPUT OUTPUT``: source data to one shard set, filtered as in jina-clip-v2.

Input: JSONL, CSV/TSV or Parquet (image paths or image bytes; img2dataset's parquet output), a
folder of images with caption files (``cat.jpg`` + ``cat.txt``), a Hugging Face dataset saved
with ``save_to_disk``, or WebDataset tars: any source a training stream takes (a folder of tars
such as img2dataset's, a brace pattern, ``pipe:`` or a URL), to re-filter and re-shard. Relative
image paths resolve against the input file's folder, from any working directory. Each row
becomes an image-text, text-pair, text-triplet or plain-text record (``--kind``): MS MARCO-style
rows ``{"query", "positive": [...], "negative": [...]}`` (a list's first positive is taken) and
Wikitext-style rows ``{"text"}`` (headings and blank lines fall to ``--min-words``); workers read, check and
resize samples in parallel and the main process drops duplicates, optionally keeps the
image-caption pairs a CLIP model scores highest, and writes the shards. Every left-out sample is
recorded with a reason in ``skipped.jsonl`` and counted in the summary. A build that writes
nothing, or skips more than half of its input (not counting ``--similarity-keep``'s share), exits
with 1 and names its top reasons and an example, unless ``--accept-skips``.

Duplicates: by default only the same image (perceptual hash) with the same caption is one; the
same image with other captions (languages, sources) stays, as several samples.
``--one-caption-per-image`` keeps only the first caption of each image.
"""

from __future__ import annotations

import argparse
import collections
import csv
import itertools
import json
import logging
import math
import multiprocessing
import os
import pickle
import re
import sys
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple

from PIL import ExifTags, Image
from tqdm import tqdm

from mmclip.data.fields import FieldMap
from mmclip.data.formats import (
    CAPTION_KINDS,
    KINDS,
    PAIR_KINDS,
    BadSample,
    ImageText,
    Record,
    Text,
    TextPair,
    TextTriplet,
    decode,
)
from mmclip.data.sharding import ShardSlice
from mmclip.data.shards import ShardSetWriter, WriteSummary
from mmclip.data.sources import is_local, resolve
from mmclip.data.stream import read_tar
from mmclip.data.transforms import open_image

from . import filters
from .filters import Reject

logger = logging.getLogger(__name__)

INPUT_FORMATS = ("jsonl", "csv", "parquet", "folder", "hf", "webdataset")
IMG2DATASET_COLUMNS = {"key", "url", "status"}  # its parquet output; images in a jpg/png/webp column
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
# PIL format -> stored extension; anything else is re-encoded as JPEG.
STORED_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
PIL_FORMATS = {extension: name for name, extension in STORED_FORMATS.items()}
JPEG_QUALITY = 90
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_-]")  # webdataset splits file names at the first dot

Row = dict[str, Any]


# --- readers: each yields rows (field name -> value), or a Reject for a row it cannot parse ---------


def detect_format(path: str) -> str:
    if not is_local(path) or "{" in path or path.endswith(".tar"):
        return "webdataset"
    path = Path(path)
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            return "hf"
        if any(path.glob("*.tar")):  # img2dataset's webdataset output: the tars hold the images
            return "webdataset"
        return "parquet" if any(path.glob("*.parquet")) else "folder"
    formats = {".jsonl": "jsonl", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}
    if path.suffix.lower() not in formats:
        raise ValueError(f"{path}: cannot tell the input format from the name; pass --input-format")
    return formats[path.suffix.lower()]


def read_jsonl(path: Path, args: argparse.Namespace) -> Iterator[Row | Reject]:
    # surrogateescape keeps undecodable bytes in the strings; the text check rejects them per sample.
    with open(path, encoding="utf-8", errors="surrogateescape") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                yield Reject("bad_json", f"line {number}: {error}")
                continue
            yield row if isinstance(row, dict) else Reject("bad_json", f"line {number}: not an object")


def read_csv(path: Path, args: argparse.Namespace) -> Iterator[Row]:
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as file:
        yield from csv.DictReader(file, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")


def read_parquet(path: Path, args: argparse.Namespace) -> Iterator[Row]:
    import pyarrow.parquet as pq

    for part in sorted(path.glob("*.parquet")) if path.is_dir() else [path]:
        parquet = pq.ParquetFile(part)
        names = parquet.schema_arrow.names
        image_column = args.image_field
        if IMG2DATASET_COLUMNS <= set(names) and image_column not in names:  # img2dataset's parquet output
            image_column = next((ext for ext in ("jpg", "png", "webp") if ext in names), image_column)
        columns = [name for name in names if name in _fields(args) | {image_column}]
        for batch in parquet.iter_batches(batch_size=256, columns=columns):
            for row in batch.to_pylist():
                row[args.image_field] = row.get(image_column)
                yield row


def read_folder(path: Path, args: argparse.Namespace) -> Iterator[Row]:
    """Every image under ``path`` with the caption file beside it, and its relative file name as ``path``."""
    for image in sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        caption = image.with_suffix(".txt")
        yield {
            "path": str(image.relative_to(path)),
            args.image_field: str(image.relative_to(path)),  # resolved once, against the folder
            args.caption_field: caption.read_bytes() if caption.is_file() else None,
        }


def read_hf_dataset(path: Path, args: argparse.Namespace) -> Iterator[Row]:
    import datasets

    dataset = datasets.load_from_disk(str(path))
    if isinstance(dataset, datasets.DatasetDict):
        dataset = dataset[args.split]
    dataset = dataset.select_columns([name for name in dataset.column_names if name in _fields(args)])
    for name, feature in dataset.features.items():
        if isinstance(feature, datasets.Image):  # keep the file bytes: workers decode and check them
            dataset = dataset.cast_column(name, datasets.Image(decode=False))
    yield from dataset


def read_webdataset(spec: str, args: argparse.Namespace) -> Iterator[Row | Reject]:
    """The samples of any shard source, read as the loader reads them (``--fields`` maps foreign
    layouts), as rows under this build's field names; a sample the loader would skip is a Reject.

    The source resolves here, so one that names nothing fails before anything is written."""
    return _webdataset_rows(resolve(spec, args.index_cache), FieldMap(args.kind, args.fields), args)


def _webdataset_rows(source, field_map: FieldMap, args: argparse.Namespace) -> Iterator[Row | Reject]:
    for url, count in zip(source.shards, source.counts):
        for _, raw in read_tar(ShardSlice(url, count)):
            try:
                if "__error__" in raw:
                    raise BadSample(raw["__error__"], raw["__detail__"])
                record = decode(args.kind, field_map(raw))
            except BadSample as bad:
                yield Reject(bad.reason, f"{raw['__key__']}: {bad}")
                continue
            yield _record_row(record, args)


def _record_row(record: Record, args: argparse.Namespace) -> Row:
    """A decoded record as an input row of this build, under the field names it reads."""
    row: Row = {"__key__": record.key, args.language_field: record.language}
    if isinstance(record, ImageText):
        row.update({args.image_field: record.image, args.caption_field: record.caption})
    elif isinstance(record, Text):
        row[args.text_field] = record.text
    else:
        row.update({args.query_field: record.query, args.positive_field: record.positive})
        if isinstance(record, TextTriplet):
            row[args.negatives_field] = record.negatives
    return row


READERS = {
    "jsonl": read_jsonl,
    "csv": read_csv,
    "parquet": read_parquet,
    "folder": read_folder,
    "hf": read_hf_dataset,
    "webdataset": read_webdataset,
}


def _fields(args: argparse.Namespace) -> set[str]:
    """The input fields this build reads (the columns worth loading)."""
    names = [
        args.key_field,
        args.language_field,
        args.image_field,
        args.caption_field,
        args.question_field,
        args.answer_field,
        args.query_field,
        args.positive_field,
        args.negatives_field,
        args.text_field,
        *(args.long_caption_fields or "").split(","),
    ]
    return {name for name in names if name}


# --- one row to one record, in a worker ----------------------------------------------------------


class Prepared(NamedTuple):
    key: str
    record: Record | None = None
    reject: Reject | None = None
    duplicate_key: str | None = None  # for the duplicate check in the main process: image hash (+ caption)


class SamplePreparer:
    """Reads one row's text and image and applies the per-sample filters; picklable for the workers."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        languages = args.languages.split(",") if args.languages else None
        self.languages = frozenset(code.strip().lower() for code in languages) if languages else None
        local = Path(args.input) if is_local(args.input) else Path.cwd()
        # Relative paths name files beside the input, whatever the working directory.
        self.image_root = Path(args.image_root or (local if local.is_dir() else local.parent)).absolute()

    def __call__(self, item: tuple[int, Row | Reject]) -> Prepared:
        index, row = item
        key = self._key(row) or f"{index:09d}"
        try:
            if isinstance(row, Reject):
                raise row
            return self._prepare(key, row)
        except Reject as reject:
            return Prepared(key, reject=reject)

    def _key(self, row: Row | Reject) -> str:
        value = row.get(self.args.key_field) if self.args.key_field and isinstance(row, dict) else None
        return _UNSAFE_KEY_CHARS.sub("_", str(value).strip()) if value is not None else ""

    def _prepare(self, key: str, row: Row) -> Prepared:
        args = self.args
        if args.kind == "image_text":
            caption, caption_kind = self._caption(row)
            _check(filters.check_words(caption, args.min_words))
            language = self._language(row, caption)
            image, image_format, stored = self._image(row)
            width, height = stored.size
            record = ImageText(key, image, image_format, caption, language, args.source, caption_kind, width, height)
            duplicate = None
            if args.dedup:  # the same image with another caption is another sample, unless asked otherwise
                duplicate = filters.image_hash(stored) + ("" if args.one_caption_per_image else "\t" + caption)
            return Prepared(key, record, duplicate_key=duplicate)
        if args.kind == "text":
            text = _text(row, args.text_field)
            _check(filters.check_words(text, args.min_words))
            return Prepared(key, Text(key, text, self._language(row, text), args.source))
        query, positive = _text(row, args.query_field), _positive(row, args.positive_field)
        language = self._language(row, query)
        if args.kind == "text_pair":
            return Prepared(key, TextPair(key, query, positive, language, args.source, args.pair_kind))
        negatives = _negatives(row, args.negatives_field)
        return Prepared(key, TextTriplet(key, query, positive, negatives, language, args.source))

    def _caption(self, row: Row) -> tuple[str, str]:
        """The caption and its kind: "question answer" for QA sets, joined fields for long captions."""
        args = self.args
        if args.question_field:
            caption = f"{_text(row, args.question_field)} {_text(row, args.answer_field)}"
            return caption, args.caption_kind or "qa"
        if args.long_caption_fields:
            parts = (_text(row, name, required=False) for name in args.long_caption_fields.split(","))
            # dict.fromkeys: WIT often repeats one description in several fields
            caption = "\n".join(dict.fromkeys(part for part in parts if part))
            if not caption:
                raise Reject("empty_text", f"all of {args.long_caption_fields} are empty")
            return caption, args.caption_kind or "long"
        return _text(row, args.caption_field), args.caption_kind or "short"

    def _language(self, row: Row, text: str) -> str | None:
        """The row's language if it has one, else py3langid's guess; rejects unwanted languages."""
        args = self.args
        language = _text(row, args.language_field, required=False) if args.language_field else None
        confidence = 1.0  # a given language is trusted
        if language:
            language = language.lower()
        elif args.identify_language:
            language, confidence = filters.identify_language(text)
        _check(filters.check_language(language, confidence, self.languages, args.min_language_confidence))
        return language

    def _image(self, row: Row) -> tuple[bytes, str, Image.Image]:
        """The stored bytes, their format and the stored image (for the hash)."""
        args = self.args
        data = _image_bytes(row.get(args.image_field), args.image_field, self.image_root)
        if not data:
            raise Reject("empty_image", "zero bytes")
        try:  # the loader's own check: header only, bombs refused before any pixel is decoded
            image = open_image(data, args.max_image_pixels or math.inf)
        except BadSample as bad:
            raise Reject(bad.reason, str(bad)) from None
        _check(filters.check_aspect_ratio(*image.size, args.max_aspect_ratio))
        try:
            return _stored_image(image, data, args.max_side)
        except Exception as error:  # PIL raises many types on damaged data; all mean the image is unusable
            raise Reject("corrupt_image", f"{type(error).__name__}: {error}") from None


def _check(reject: Reject | None) -> None:
    if reject is not None:
        raise reject


def _text(row: Row, field: str, required: bool = True) -> str | None:
    """A stripped UTF-8 text field; a missing or blank optional field is None."""
    value = row.get(field)
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise Reject("non_utf8_text", field) from None
    elif isinstance(value, str):
        try:
            value.encode("utf-8")  # undecodable input bytes arrive as lone surrogates
        except UnicodeEncodeError:
            raise Reject("non_utf8_text", field) from None
    elif value is not None:
        value = str(value)  # numbers, e.g. a QA answer
    text = value.strip() if value is not None else ""
    if not text and required:
        raise Reject("missing_field" if value is None else "empty_text", field)
    return text or None


def _positive(row: Row, field: str) -> str:
    """A text, or the first of a list of texts (MS MARCO-style ``positive: [...]``)."""
    value = row.get(field)
    if isinstance(value, list):
        if not value:
            raise Reject("empty_text", f"{field} is an empty list")
        return _text({field: value[0]}, field)
    return _text(row, field)


def _negatives(row: Row, field: str) -> list[str]:
    value = row.get(field)
    if isinstance(value, str):  # a JSON list in a CSV cell
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = None
    negatives = [_text({field: item}, field, required=False) for item in value] if isinstance(value, list) else []
    if not negatives or not all(negatives):
        raise Reject("bad_negatives", f"{field} is not a non-empty list of non-empty texts")
    return negatives


def _image_bytes(value: Any, field: str, root: Path) -> bytes:
    """Image bytes from raw bytes, a {"bytes", "path"} struct (HF Image, Parquet) or a file path."""
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if not value:
        raise Reject("missing_field", field)
    path = root / value
    try:
        return path.read_bytes()
    except OSError as error:
        raise Reject("missing_image", f"{path}: {error.strerror}") from None


def _stored_image(image: Image.Image, data: bytes, max_side: int) -> tuple[bytes, str, Image.Image]:
    """The image as stored: the original bytes when they fit, else upright, at most ``max_side``, re-encoded."""
    image_format = STORED_FORMATS.get(image.format)
    too_big = bool(max_side) and max(image.size) > max_side
    rotated = image.getexif().get(ExifTags.Base.Orientation, 1) != 1
    if not (too_big or rotated or image_format is None):
        image.load()  # decodes every byte, so a truncated file is caught here
        return data, image_format, image
    if rotated:
        # Re-encoding drops EXIF, so the rotation is applied to the pixels.
        from PIL import ImageOps

        image = ImageOps.exif_transpose(image)
    if image.mode not in ("RGB", "RGBA", "L"):  # palette images would resize with nearest neighbour
        image = image.convert("RGBA" if image.has_transparency_data else "RGB")
    if too_big:
        scale = max_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image.draft(image.mode, size)  # JPEG decodes at 1/2, 1/4 or 1/8 scale, still at least `size`: 3x faster
        image = image.resize(size, Image.Resampling.BICUBIC)
    image_format = image_format or "jpg"
    if image_format == "jpg" and image.mode == "RGBA":
        image = image.convert("RGB")
    buffer = BytesIO()
    image.save(buffer, format=PIL_FORMATS[image_format], quality=JPEG_QUALITY)
    return buffer.getvalue(), image_format, image


# --- the pipeline --------------------------------------------------------------------------------


def _batched(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def prepare_in_parallel(preparer: SamplePreparer, rows: Iterable, workers: int, chunk_size: int) -> Iterator[Prepared]:
    """``preparer`` over numbered rows, in input order, on ``workers`` processes.

    ``Pool.imap`` reads its whole input ahead, so rows go in windows, two in flight at a time:
    memory stays bounded and the workers never wait for the main process to drain a window.
    """
    items = enumerate(rows)
    if workers <= 1:
        yield from map(preparer, items)
        return
    with multiprocessing.Pool(workers) as pool:
        pending: collections.deque = collections.deque()
        for window in _batched(items, workers * chunk_size * 4):
            pending.append(pool.imap(preparer, window, chunk_size))
            if len(pending) == 2:
                yield from pending.popleft()
        while pending:
            yield from pending.popleft()


def _new_records(results: Iterable[Prepared], writer: ShardSetWriter) -> Iterator[Record]:
    """Records that passed the worker's checks with a new key and a new image; the rest are skipped."""
    keys, images = filters.Unique("duplicate_key"), filters.Unique("duplicate_image")
    for result in results:
        reject = result.reject or keys(result.key)
        if reject is None and result.duplicate_key is not None:
            reject = images(result.duplicate_key)
        if reject is not None:
            writer.skip(result.key, reject.reason, reject.detail)
        else:
            yield result.record


def _write_most_similar(
    records: Iterable[ImageText], scorer: filters.SimilarityScorer, keep: float, batch_size: int, writer: ShardSetWriter
) -> None:
    """Two passes: score every record (spooling it to disk), then write the top ``keep`` fraction in input order."""
    scores: list[float] = []
    with tempfile.TemporaryFile(dir=writer.output_dir) as spool:
        for batch in _batched(records, batch_size):
            scores += scorer([record.image for record in batch], [record.caption for record in batch])
            for record in batch:
                pickle.dump(record, spool)
        kept = filters.top_fraction(scores, keep)
        lowest_kept = min((scores[index] for index in kept), default=float("inf"))
        spool.seek(0)
        for index, score in enumerate(scores):
            record = pickle.load(spool)
            if index in kept:
                writer.write(record)
            else:
                writer.skip(record.key, "low_similarity", f"score {score:.4f} < lowest kept {lowest_kept:.4f}")


def build(
    rows: Iterable[Row | Reject],
    args: argparse.Namespace,
    writer: ShardSetWriter,
    scorer: filters.SimilarityScorer | None = None,
) -> WriteSummary:
    """Prepare, check and write every row; closes ``writer`` only when all went through."""
    start = time.perf_counter()
    results = prepare_in_parallel(SamplePreparer(args), rows, args.workers, args.chunk_size)
    results = tqdm(results, desc=f"build {args.output.name}", unit=" rows", file=sys.stderr, dynamic_ncols=True)
    records = _new_records(results, writer)
    if scorer is not None:
        _write_most_similar(records, scorer, args.similarity_keep, args.similarity_batch_size, writer)
    else:
        for record in records:
            writer.write(record)
    # Not `with writer`: a build that raised must not leave a manifest that makes it look finished.
    summary = writer.close()
    elapsed = time.perf_counter() - start
    logger.info("%d rows in %.1f s (%.1f rows/s)", results.n, elapsed, results.n / max(elapsed, 1e-9))
    return summary


# --- command line ----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "input",
        help="JSONL, CSV/TSV or Parquet file (or a folder of Parquet files), an image folder with caption files, "
        "a `datasets` save_to_disk directory, or WebDataset tars: a folder of them, a tar, a brace pattern, "
        "pipe:CMD or a URL",
    )
    parser.add_argument("output", type=Path, help="new shard set directory")
    parser.add_argument("--kind", choices=KINDS, default="image_text")
    parser.add_argument(
        "--input-format",
        choices=("auto", *INPUT_FORMATS),
        default="auto",
        help="auto: URLs, patterns and .tar are webdataset; a directory with dataset_info.json is hf, "
        "with *.tar webdataset, with *.parquet parquet, else folder",
    )
    parser.add_argument("--split", default="train", help="split of a saved DatasetDict")
    parser.add_argument("--image-root", type=Path, help="base of relative image paths (default: the input's folder)")
    parser.add_argument("--source", help="metadata `source` of every record (default: the input's name)")

    fields = parser.add_argument_group("input fields")
    fields.add_argument("--key-field", help="sample keys (default: row numbers); image folders offer `path`")
    fields.add_argument("--language-field", default="language", help="ISO 639-1 code; identified when absent")
    fields.add_argument("--image-field", default="image", help="a path, bytes, or an HF Image {bytes, path}")
    fields.add_argument("--caption-field", default="caption")
    fields.add_argument("--question-field", help="QA sets: the caption is `question answer` (caption_kind qa)")
    fields.add_argument("--answer-field", help="with --question-field")
    fields.add_argument(
        "--long-caption-fields",
        metavar="A,B,...",
        help="fields joined by newlines into one long caption (caption_kind long), "
        "e.g. WIT's caption,page_title,section_title,description",
    )
    fields.add_argument("--caption-kind", choices=CAPTION_KINDS, help="default: short, or qa / long as above")
    fields.add_argument("--query-field", default="query")
    fields.add_argument(
        "--positive-field", default="positive", help="a text, or a list of texts (the first is taken)"
    )
    fields.add_argument(
        "--negatives-field", default="negatives", help="a list of strings, or a JSON list in CSV (MS MARCO style: negative)"
    )
    fields.add_argument("--text-field", default="text", help="--kind text: the passage (Wikitext style)")
    fields.add_argument("--pair-kind", choices=PAIR_KINDS, default="other", help="text_pair metadata")
    fields.add_argument(
        "--fields",
        type=json.loads,
        metavar="JSON",
        help='webdataset input: a stream\'s field mapping, e.g. \'{"caption": "json:caption"}\' (docs/data.md)',
    )
    fields.add_argument("--index-cache", metavar="DIR", help="webdataset input: where tar sample counts are cached")

    checks = parser.add_argument_group("filters (0 turns a numeric one off)")
    checks.add_argument(
        "--min-words", type=int, default=5, help="image captions and plain texts; CJK counts 2 characters a word"
    )
    checks.add_argument("--max-aspect-ratio", type=float, default=3.0, help="longer side over shorter side")
    checks.add_argument(
        "--max-image-pixels", type=int, default=Image.MAX_IMAGE_PIXELS, help="larger images are decompression bombs"
    )
    checks.add_argument("--max-side", type=int, default=384, help="downscale for storage, never up")
    checks.add_argument(
        "--identify-language",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="py3langid fills a missing language",
    )
    checks.add_argument("--languages", metavar="en,de,...", help="keep only these languages")
    checks.add_argument("--min-language-confidence", type=float, default=0.0, help="for identified languages")
    checks.add_argument(
        "--dedup",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="drop a sample whose image (perceptual hash) and caption were both seen before",
    )
    checks.add_argument(
        "--one-caption-per-image",
        action="store_true",
        help="dedup by image alone: drop every further caption (language, source) of an image seen before",
    )
    checks.add_argument(
        "--similarity-model", type=Path, metavar="CONFIG.yaml", help="keep the pairs this mmclip model scores highest"
    )
    checks.add_argument("--similarity-tokenizer", type=Path, metavar="DIR", help="default: the config's text.tokenizer")
    checks.add_argument("--similarity-keep", type=float, default=0.5, help="fraction kept")
    checks.add_argument("--similarity-batch-size", type=int, default=64)
    checks.add_argument("--similarity-max-tokens", type=int, default=77)

    output = parser.add_argument_group("output and parallelism")
    output.add_argument("--shard-max-samples", type=int, default=10000)
    output.add_argument("--shard-max-bytes", type=int, default=1 << 30)
    output.add_argument("--workers", type=int, default=os.cpu_count(), help="processes; 1 runs in-process")
    output.add_argument("--chunk-size", type=int, default=16, help="rows per task sent to a worker")
    output.add_argument(
        "--accept-skips",
        action="store_true",
        help="exit 0 even when nothing is written or more than half of the input is skipped",
    )


def _usage_error(args: argparse.Namespace) -> str | None:
    if is_local(args.input) and "{" not in args.input and not Path(args.input).exists():
        return f"{args.input}: no such file or directory"
    if bool(args.question_field) != bool(args.answer_field):
        return "--question-field and --answer-field go together"
    if args.similarity_model and args.kind != "image_text":
        return "--similarity-model filters image_text only"
    if not 0 < args.similarity_keep <= 1:
        return "--similarity-keep must be in (0, 1]"
    return None


def read_rows(args: argparse.Namespace) -> Iterator[Row | Reject]:
    """The rows of ``args.input`` in its format (``--input-format``, or detected); ValueError if unknown."""
    input_format = args.input_format if args.input_format != "auto" else detect_format(args.input)
    if input_format == "webdataset":
        args.key_field = args.key_field or "__key__"  # keep the tars' sample keys
        return READERS[input_format](args.input, args)
    return READERS[input_format](Path(args.input), args)


def run(args: argparse.Namespace) -> int:
    args.source = args.source or Path(args.input.rstrip("/").split("/")[-1]).stem
    try:
        if error := _usage_error(args):
            raise ValueError(error)
        rows = read_rows(args)
        scorer = None
        if args.similarity_model:  # loaded before anything is written, so a bad config fails fast
            scorer = filters.SimilarityScorer(
                args.similarity_model, args.similarity_tokenizer, args.similarity_max_tokens
            )
        writer = ShardSetWriter(args.output, args.kind, args.shard_max_samples, args.shard_max_bytes)
    except (OSError, ValueError) as error:  # bad flags, unknown format, bad model config, existing shards
        print(f"build: {error}", file=sys.stderr)
        return 2
    summary = build(rows, args, writer, scorer)
    print(summary.format())
    if complaint := _dishonest(summary, args.input):
        if not args.accept_skips:
            print(f"build: {complaint}; pass --accept-skips if that is expected", file=sys.stderr)
            return 1
    return 0


def _dishonest(summary: WriteSummary, source: str) -> str | None:
    """Why a finished build is not what its user meant, or None: nothing written, or mostly skipped.

    ``low_similarity`` does not count: ``--similarity-keep`` sets that fraction on purpose."""
    skipped = sum(count for reason, count in summary.skipped.items() if reason != "low_similarity")
    if summary.written and skipped * 2 <= summary.written + skipped:
        return None
    head = f"wrote {summary.written} samples" if summary.written else "wrote no sample"
    top = ", ".join(f"{reason} {count}" for reason, count in summary.skipped.most_common(3)) or "no input rows"
    complaint = f"{head}, skipped {skipped} of {summary.written + skipped} rows of {source} (top reasons: {top})"
    if summary.skipped:
        complaint += f"; e.g. {summary.examples[summary.skipped.most_common(1)[0][0]]}"
    return complaint
