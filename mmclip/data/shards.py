"""Shard sets on disk: writing them (builders, synthetic corpus) and reading their manifest (loader).

A shard set is one directory holding one kind of sample::

    {kind}-000000.tar ...   the shards (webdataset tar files)
    manifest.json           format, version, kind, per-shard counts, totals, skipped per reason
    sizes.json              per-shard counts, as open_clip reads them
    skipped.jsonl           every sample the builder skipped: {"key", "reason", "detail"}

Shards are written under a temporary name and renamed when complete, and the manifest last, so
a killed build never leaves a truncated shard that looks finished.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import webdataset as wds

from .formats import FORMAT_NAME, FORMAT_VERSION, KINDS, Record, encode, shard_name

MANIFEST = "manifest.json"
SKIPPED = "skipped.jsonl"


@dataclass
class WriteSummary:
    kind: str
    written: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # reason -> its first sample: "key: detail"
    shards: int = 0
    bytes: int = 0

    def format(self) -> str:
        skipped = ", ".join(f"{reason} {count}" for reason, count in sorted(self.skipped.items())) or "none"
        return (
            f"{self.kind}: wrote {self.written} samples in {self.shards} shards ({self.bytes / 1e6:.1f} MB); "
            f"skipped {sum(self.skipped.values())} ({skipped})"
        )


class ShardSetWriter:
    """Write records of one kind into size-bounded shards, then the manifest."""

    def __init__(
        self,
        output_dir: str | Path,
        kind: str,
        max_samples: int = 10000,
        max_bytes: int = 1 << 30,
        mtime: float | None = None,
    ):
        """``mtime`` fixes the tar members' modification time (default: now), for byte-identical shards."""
        if kind not in KINDS:
            raise ValueError(f"unknown sample kind {kind!r}; expected one of {KINDS}")
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if (self.output_dir / MANIFEST).exists() or any(self.output_dir.glob("*.tar")):
            raise FileExistsError(f"{self.output_dir} already holds shards; write a new shard set elsewhere")
        self.kind, self.max_samples, self.max_bytes, self.mtime = kind, max_samples, max_bytes, mtime
        self.summary = WriteSummary(kind)
        self.counts: dict[str, int] = {}
        self._skipped_log = open(self.output_dir / SKIPPED, "w", encoding="utf-8")
        self._tar: wds.TarWriter | None = None
        self._tar_samples = self._tar_bytes = 0

    def write(self, record: Record) -> None:
        if record.kind != self.kind:
            raise ValueError(f"a {record.kind} record in a {self.kind} shard set")
        sample = encode(record)
        size = sum(len(v) for k, v in sample.items() if k != "__key__")
        if self._tar is None or self._tar_samples >= self.max_samples or self._tar_bytes + size > self.max_bytes:
            self._next_shard()
        self._tar.write(sample)
        self._tar_samples += 1
        self._tar_bytes += size
        self.summary.written += 1

    def skip(self, key: str, reason: str, detail: str = "") -> None:
        self.summary.skipped[reason] += 1
        self.summary.examples.setdefault(reason, f"{key}: {detail}" if detail else key)
        self._skipped_log.write(json.dumps({"key": key, "reason": reason, "detail": detail}, ensure_ascii=False) + "\n")

    def close(self) -> WriteSummary:
        self._finish_shard()
        self._skipped_log.close()
        manifest = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "kind": self.kind,
            "shards": self.counts,
            "total": self.summary.written,
            "bytes": self.summary.bytes,
            "skipped": dict(self.summary.skipped),
        }
        _write_json_atomic(self.output_dir / "sizes.json", self.counts)
        _write_json_atomic(self.output_dir / MANIFEST, manifest)
        return self.summary

    def __enter__(self) -> ShardSetWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:  # no manifest: a failed build must not look finished
            if self._tar is not None:
                self._tar.close()
            self._skipped_log.close()

    def _next_shard(self) -> None:
        self._finish_shard()
        name = shard_name(self.kind, len(self.counts))
        self._tar_name = name
        self._tar = wds.TarWriter(str(self.output_dir / (name + ".tmp")), mtime=self.mtime)
        self._tar_samples = self._tar_bytes = 0

    def _finish_shard(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        self._tar = None
        path = self.output_dir / self._tar_name
        os.replace(str(path) + ".tmp", path)
        self.counts[self._tar_name] = self._tar_samples
        self.summary.shards += 1
        self.summary.bytes += path.stat().st_size


@dataclass(frozen=True)
class ShardSet:
    """A shard set as its manifest describes it."""

    directory: Path
    kind: str
    shards: tuple[Path, ...]
    counts: tuple[int, ...]

    @property
    def total(self) -> int:
        return sum(self.counts)


class ShardSourceError(ValueError):
    """A shard directory a stream names that cannot be read: missing, empty, another kind or format."""


class MissingShards(ShardSourceError, FileNotFoundError):
    """The directory, its manifest or a shard it lists does not exist."""


def read_shard_set(directory: str | Path) -> ShardSet:
    """Read and check ``manifest.json``; every shard it lists must exist."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise MissingShards(f"{directory}: no such shard directory")
    if not path.is_file():
        raise MissingShards(f"{directory}: no {MANIFEST}; build shards with `python -m data_pipelines`")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as error:
        raise ShardSourceError(f"{path}: unreadable ({error})") from None
    if manifest.get("format") != FORMAT_NAME or manifest.get("version") != FORMAT_VERSION:
        raise ShardSourceError(
            f"{path}: format {manifest.get('format')!r} version {manifest.get('version')!r}; "
            f"this mmclip reads {FORMAT_NAME!r} version {FORMAT_VERSION}"
        )
    shards = tuple(directory / name for name in manifest["shards"])
    missing = [str(p) for p in shards if not p.is_file()]
    if missing:
        raise MissingShards(f"{path}: shards listed but missing: {', '.join(missing[:5])}")
    return ShardSet(directory, manifest["kind"], shards, tuple(manifest["shards"].values()))


def _write_json_atomic(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False))
    os.replace(tmp, path)
