"""``python -m data_pipelines inspect SOURCE ...``: what shards hold, and everything left out or broken.

A source is anything a stream's ``shards`` takes (:mod:`mmclip.data.sources`). For an mmclip
shard set it reads the manifest and every sample of every tar (webdataset), and lists every
sample the builder skipped (``skipped.jsonl``) and every problem found in the shards: a sample
``formats.decode`` rejects, an image PIL cannot open, an unreadable or truncated tar, a shard
whose sample count disagrees with the manifest. Plain tars, folders of them, patterns and URLs
are read by the training loader's own reader, field mapping and image decoding, so each problem
carries the reason the loader would skip that sample for. Both report samples per kind,
language and length bucket. Exits with 1 when the shards have problems (skips alone are normal).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from io import BytesIO
from pathlib import Path
from typing import Any

import webdataset as wds
from PIL import Image

from mmclip.data import DataConfig, ImageTransform
from mmclip.data.fields import FieldMap
from mmclip.data.formats import IMAGE_EXTENSIONS, KINDS, BadSample, ImageText, Record, Text, decode
from mmclip.data.sharding import ShardSlice
from mmclip.data.shards import MANIFEST, SKIPPED, read_shard_set
from mmclip.data.sources import SourceError, is_local, resolve
from mmclip.data.stream import read_tar

from .filters import count_words

LENGTH_BUCKETS = ((5, "<5"), (10, "5-9"), (20, "10-19"), (50, "20-49"), (100, "50-99"), (float("inf"), ">=100"))


def length_bucket(text: str) -> str:
    """The bucket of ``text``'s word count (counted as the ``--min-words`` filter counts)."""
    words = count_words(text)
    return next(label for bound, label in LENGTH_BUCKETS if words < bound)


def inspect_shard_set(directory: str | Path) -> dict[str, Any]:
    """Counts, the builder's skips and the problems of one shard set, as a JSON-ready dict."""
    directory = Path(directory)
    report: dict[str, Any] = {
        "directory": str(directory),
        "kind": None,
        "shards": 0,
        "samples": 0,
        "languages": Counter(),
        "lengths": {},
        "skipped": _skipped(directory),
        "problems": [],
    }
    try:
        shard_set = read_shard_set(directory)
        if shard_set.kind not in KINDS:
            raise ValueError(f"{directory}: unknown kind {shard_set.kind!r}")
    except (OSError, ValueError, KeyError) as error:  # no or broken manifest, another version, missing shards
        report["problems"].append(_problem(None, None, "bad_manifest", f"{type(error).__name__}: {error}"))
        return report
    report.update(kind=shard_set.kind, shards=len(shard_set.shards))
    for shard, expected in zip(shard_set.shards, shard_set.counts):
        read = 0
        for sample in _samples(shard, report["problems"]):
            read += 1
            try:
                record = decode(shard_set.kind, sample)
                if isinstance(record, ImageText):
                    _verify_image(record)
            except BadSample as bad:
                report["problems"].append(_problem(shard, sample.get("__key__"), bad.reason, str(bad)))
                continue
            _count(record, report)
        if read != expected:
            detail = f"the manifest lists {expected} samples, the tar holds {read}"
            report["problems"].append(_problem(shard, None, "count_mismatch", detail))
    return report


def inspect_source(
    spec: str,
    kind: str | None = None,
    fields: dict[str, Any] | None = None,
    max_image_pixels: int = DataConfig.max_image_pixels,
    cache_dir: str | None = None,
) -> dict[str, Any]:
    """The report of :func:`inspect_shard_set` for plain tars, read as the loader reads them.

    ``kind`` defaults to what the first sample looks like; ``fields`` is a stream's field mapping.
    """
    report: dict[str, Any] = {
        "directory": spec,
        "kind": kind,
        "shards": 0,
        "samples": 0,
        "languages": Counter(),
        "lengths": {},
        "skipped": [],
        "problems": [],
    }
    try:
        source = resolve(spec, cache_dir)
    except SourceError as error:
        report["problems"].append(_problem(None, None, "bad_source", str(error)))
        return report
    report["shards"] = len(source.shards)
    check_image = ImageTransform(32, False, max_image_pixels)  # the loader's decode: its skip reasons
    field_map = None
    for url, count in zip(source.shards, source.counts):
        name = url.rpartition("/")[2]
        for _, raw in read_tar(ShardSlice(url, count)):
            if field_map is None:
                report["kind"] = kind = kind or source.kind or _looks_like(raw)
                field_map = FieldMap(kind, fields)
            try:
                if "__error__" in raw:
                    raise BadSample(raw["__error__"], raw["__detail__"])
                record = decode(kind, field_map(raw))
                if isinstance(record, ImageText):
                    check_image(record.image)
            except BadSample as bad:
                report["problems"].append(_problem(name, raw["__key__"], bad.reason, str(bad)))
                continue
            _count(record, report)
    return report


def _looks_like(raw: dict[str, Any]) -> str:
    if any(ext in raw for ext in IMAGE_EXTENSIONS):
        return "image_text"
    if "query.txt" in raw:
        return "text_triplet" if "negatives.json" in raw else "text_pair"
    return "text"


def _skipped(directory: Path) -> list[dict[str, Any]]:
    path = directory / SKIPPED
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _samples(shard: Path, problems: list[dict[str, Any]]):
    """The raw samples of one tar; an unreadable or truncated tar ends early and adds a problem."""

    def stop(error: Exception) -> bool:
        # webdataset appends " @ <stream>" to the message; the shard is named already.
        detail = str(error.args[0] if error.args else error).split(" @ ")[0]
        problems.append(_problem(shard, None, "unreadable_tar", f"{type(error).__name__}: {detail}"))
        return False

    return wds.WebDataset(str(shard), shardshuffle=False, handler=stop, empty_check=False)


def _verify_image(record: ImageText) -> None:
    try:
        Image.open(BytesIO(record.image)).verify()
    except Exception as error:  # PIL raises many types on damaged files
        raise BadSample("corrupt_image", f"{record.key}: {type(error).__name__}: {error}") from None


def _count(record: Record, report: dict[str, Any]) -> None:
    report["samples"] += 1
    report["languages"][record.language or "unknown"] += 1
    if isinstance(record, ImageText):
        texts = {"caption": record.caption}
    elif isinstance(record, Text):
        texts = {"text": record.text}
    else:
        texts = {"query": record.query, "positive": record.positive}
    for field, text in texts.items():
        report["lengths"].setdefault(field, Counter())[length_bucket(text)] += 1


def _problem(shard: Path | str | None, key: str | None, reason: str, detail: str) -> dict[str, Any]:
    shard = shard.name if isinstance(shard, Path) else shard
    return {"shard": shard, "key": key, "reason": reason, "detail": detail}


def inspect_shard_sets(sources: list[str | Path], **plain: Any) -> dict[str, Any]:
    """Reports of every source and the samples per kind over all of them.

    A local folder with a manifest, or a local path that names nothing, is a shard set
    (:func:`inspect_shard_set`); anything else is plain tars (:func:`inspect_source`, given ``plain``).
    """
    shard_sets = [
        inspect_shard_set(source) if _is_shard_set(str(source)) else inspect_source(str(source), **plain)
        for source in sources
    ]
    totals = Counter({kind: 0 for kind in KINDS})
    for report in shard_sets:
        if report["kind"]:
            totals[report["kind"]] += report["samples"]
    return {"shard_sets": shard_sets, "samples_per_kind": dict(totals)}


def format_report(result: dict[str, Any]) -> str:
    lines = []
    for report in result["shard_sets"]:
        header = f"{report['directory']}: {report['kind']}, {report['samples']} samples in {report['shards']} shards"
        lines.append(header)
        lines.append(f"  languages: {_counts(dict(report['languages'].most_common()))}")
        for field, buckets in report["lengths"].items():
            ordered = {label: buckets[label] for _, label in LENGTH_BUCKETS if buckets[label]}
            lines.append(f"  {field} words: {_counts(ordered)}")
        skipped = Counter(entry["reason"] for entry in report["skipped"])
        lines.append(f"  skipped by the build: {len(report['skipped'])} ({_counts(skipped)})")
        lines += [f"    {e['key']}  {e['reason']}  {e.get('detail', '')}" for e in report["skipped"]]
        lines.append(f"  problems in the shards: {len(report['problems'])}")
        lines += [
            f"    {p['shard'] or '-'}  {p['key'] or '-'}  {p['reason']}  {p['detail']}" for p in report["problems"]
        ]
    lines.append(f"samples per kind: {_counts(result['samples_per_kind'])}")
    return "\n".join(lines)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counts.items()) or "none"


def _is_shard_set(source: str) -> bool:
    if not is_local(source) or "{" in source:
        return False
    path = Path(source)
    return (path / MANIFEST).is_file() or not path.exists()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "directories",
        nargs="+",
        metavar="SOURCE",
        help="shard set directories, tar folders, tars, brace patterns, pipe: commands or URLs",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    plain = parser.add_argument_group("plain tars")
    plain.add_argument("--kind", choices=KINDS, help="default: what the first sample looks like")
    plain.add_argument(
        "--fields", type=json.loads, metavar="JSON", help='a stream\'s field mapping: \'{"caption": "json:caption"}\''
    )
    plain.add_argument(
        "--max-image-pixels", type=int, default=DataConfig.max_image_pixels, help="the loader's bomb guard"
    )
    plain.add_argument("--index-cache", metavar="DIR", help="tar counts cache (default: ~/.cache/mmclip/shard-counts)")


def run(args: argparse.Namespace) -> int:
    fields = getattr(args, "fields", None)
    if fields is not None and args.kind is None:
        print("inspect: --fields needs --kind", file=sys.stderr)
        return 2
    plain = {
        "kind": getattr(args, "kind", None),
        "fields": fields,
        "max_image_pixels": getattr(args, "max_image_pixels", DataConfig.max_image_pixels),
        "cache_dir": getattr(args, "index_cache", None),
    }
    try:
        result = inspect_shard_sets(args.directories, **plain)
    except ValueError as error:  # a bad --fields mapping
        print(f"inspect: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else format_report(result))
    return 1 if any(report["problems"] for report in result["shard_sets"]) else 0
