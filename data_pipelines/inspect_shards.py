"""``python -m data_pipelines inspect SHARDS_DIR ...``: what shard sets hold, and everything left out or broken.

Reads each set's manifest and every sample of every tar, as the loader would (webdataset), and
reports samples per kind, language and length bucket. It lists every sample the builder skipped
(``skipped.jsonl``) and every problem found in the shards: a sample ``formats.decode`` rejects,
an image PIL cannot open, an unreadable or truncated tar, a shard whose sample count disagrees
with the manifest. Exits with 1 when the shards have problems (skips alone are normal).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from io import BytesIO
from pathlib import Path
from typing import Any

import webdataset as wds
from PIL import Image

from mmclip.data.formats import KINDS, BadSample, ImageText, Record, Text, decode
from mmclip.data.shards import SKIPPED, read_shard_set

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


def _problem(shard: Path | None, key: str | None, reason: str, detail: str) -> dict[str, Any]:
    return {"shard": shard.name if shard else None, "key": key, "reason": reason, "detail": detail}


def inspect_shard_sets(directories: list[str | Path]) -> dict[str, Any]:
    """Reports of every shard set and the samples per kind over all of them."""
    shard_sets = [inspect_shard_set(directory) for directory in directories]
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directories", nargs="+", metavar="SHARDS_DIR", help="shard set directories")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    result = inspect_shard_sets(args.directories)
    print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else format_report(result))
    return 1 if any(report["problems"] for report in result["shard_sets"]) else 0
