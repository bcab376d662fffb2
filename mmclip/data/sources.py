"""What a stream's ``shards`` entries may name, and how many samples each of their tars holds.

Every entry resolves to a list of tar URLs with a sample count each (a :class:`Source`):

=================================== ===========================================================
``/data/mine``                      an mmclip shard set (a folder with ``manifest.json``)
``/data/i2d``                       a folder of plain WebDataset tars (img2dataset, open_clip)
``/data/laion/00042.tar``           one tar
``/data/laion/{00000..41455}.tar``  a brace pattern, of paths or of any URL below
``pipe:aws s3 cp s3://b/x.tar -``   a command writing a tar to stdout (webdataset's ``pipe:``)
``https://host/d/{000..009}.tar``   http(s), streamed by webdataset (curl)
``s3://b/d/{000..009}.tar``         any other fsspec URL (``s3://``, ``gs://``, ``file://``, ...)
``https://host/d``, ``s3://b/d``    a folder URL: the tars its manifest / ``sizes.json`` list
                                    (fsspec URLs are also listed)
=================================== ===========================================================

Counts come from, in this order: mmclip's manifest, open_clip's ``sizes.json`` in the tars'
folder, img2dataset's ``{shard}_stats.json`` (``successes``), or one counting pass over the tar.
Counts read per shard (the last two) go to a small index in ``cache_dir``, outside the source
(which may be read-only or remote), and are reused; a local tar's entry holds its size and
mtime, so a rewritten tar is counted again. Remote tars stream through :class:`ReadAhead`, a
thread that reads ahead of the tar parser so the transport overlaps decoding.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from braceexpand import braceexpand

from .shards import MANIFEST, ShardSourceError, read_shard_set

SIZES = "sizes.json"
PROBE_THREADS = 16  # remote per-shard look-ups (stats files, counting) run this many at once


class SourceError(ShardSourceError):
    """A ``shards`` entry that names nothing readable (the CLI prints it on one line, exit 2)."""


@dataclass(frozen=True)
class Source:
    """One ``shards`` entry, resolved: its tars and their sample counts."""

    spec: str
    kind: str | None  # an mmclip shard set's kind; None for plain tars (the stream says)
    shards: tuple[str, ...]
    counts: tuple[int, ...]

    @property
    def total(self) -> int:
        return sum(self.counts)


def is_local(url: str | Path) -> bool:
    url = str(url)
    return "://" not in url and not url.startswith("pipe:")


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mmclip" / "shard-counts"


def resolve(spec: str, cache_dir: str | Path | None = None) -> Source:
    """The tars and counts of one ``shards`` entry; raises :class:`SourceError` naming it."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    if is_local(spec) and Path(spec).is_dir() and (Path(spec) / MANIFEST).is_file():
        try:
            shard_set = read_shard_set(spec)
        except (OSError, ValueError, KeyError) as error:
            raise SourceError(str(error)) from None
        return Source(spec, shard_set.kind, tuple(map(str, shard_set.shards)), shard_set.counts)
    urls = _urls(spec)
    if not urls:
        raise SourceError(f"{spec}: no tar files there")
    missing = [url for url in urls if is_local(url) and not Path(url).is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if missing[1:] else ""
        raise SourceError(f"{spec}: no such file: {missing[0]}{more}")
    kind, counts = _counts(urls, cache_dir)
    return Source(spec, kind, tuple(urls), tuple(counts))


def resolve_stream(name: str, kind: str, specs: list[str], cache_dir: str | Path | None = None) -> list[Source]:
    """The sources of stream ``name``: each readable, of the stream's kind, and not all empty."""
    try:
        sources = [resolve(spec, cache_dir) for spec in specs]
    except SourceError as error:
        raise SourceError(f"streams.{name}.shards: {error}") from None
    for source in sources:
        if source.kind not in (None, kind):  # plain tars hold what the stream says
            raise SourceError(f"streams.{name}.shards: {source.spec} holds {source.kind}, not {kind}")
    if not any(source.total for source in sources):
        raise SourceError(f"streams.{name}.shards: {', '.join(map(str, specs))}: no samples")
    return sources


def _urls(spec: str) -> list[str]:
    _check_transport(spec)
    if "{" in spec and ".." in spec:
        return list(braceexpand(spec))
    if spec.startswith("pipe:") or spec.rstrip("/").endswith(".tar"):
        return [spec]
    if is_local(spec):
        if not Path(spec).is_dir():
            raise SourceError(f"{spec}: no such file or directory")
        return sorted(str(path) for path in Path(spec).glob("*.tar"))
    return _list_folder_url(spec.rstrip("/"))


def _check_transport(spec: str) -> None:
    """An fsspec URL needs its filesystem's package (s3fs, gcsfs, ...): say which, before any work."""
    scheme = spec.split("://", 1)[0] if "://" in spec else None
    if scheme is None or spec.startswith("pipe:") or scheme in ("http", "https"):
        return
    import fsspec

    try:
        fsspec.get_filesystem_class(scheme)
    except (ImportError, ValueError) as error:
        raise SourceError(f"{spec}: fsspec cannot open {scheme}:// here ({error})") from None


def _list_folder_url(folder: str) -> list[str]:
    """The tars of a folder URL: those its manifest or ``sizes.json`` lists, else an fsspec listing."""
    for name in (MANIFEST, SIZES):
        data = _read_json(f"{folder}/{name}")
        if isinstance(data, dict):
            names = data.get("shards") if name == MANIFEST else data
            return [f"{folder}/{shard}" for shard in names]
    if folder.split("://", 1)[0] in ("http", "https"):
        raise SourceError(f"{folder}: an http folder needs a {MANIFEST} or {SIZES}; or give a brace pattern")
    import fsspec

    fs, path = fsspec.core.url_to_fs(folder)
    protocol = folder.split("://", 1)[0]
    return sorted(f"{protocol}://{name.split('://', 1)[-1]}" for name in fs.glob(f"{path}/*.tar"))


def _counts(urls: list[str], cache_dir: Path) -> tuple[str | None, list[int]]:
    """Per tar: the folder's manifest, its ``sizes.json``, the shard's ``_stats.json``, or a counting pass."""
    folders: dict[str, tuple[str | None, dict[str, int]]] = {}
    known: dict[str, int] = {}
    kind = None
    for url in urls:
        folder, _, name = url.rpartition("/")
        if url.startswith("pipe:"):
            continue  # a command: nothing beside it to read
        if folder not in folders:
            folders[folder] = _folder_counts(folder)
        folder_kind, counts = folders[folder]
        kind = kind or folder_kind
        if name in counts:
            known[url] = counts[name]
    missing = [url for url in urls if url not in known]
    if missing:
        try:
            known.update(ShardIndex(cache_dir, missing).counts())
        except OSError as error:  # a tar that cannot be fetched: nothing is cached, the run does not start
            raise SourceError(f"cannot count samples: {error}") from None
    return kind, [known[url] for url in urls]


def _folder_counts(folder: str) -> tuple[str | None, dict[str, int]]:
    manifest = _read_json(f"{folder}/{MANIFEST}")
    if isinstance(manifest, dict) and isinstance(manifest.get("shards"), dict):
        return manifest.get("kind"), manifest["shards"]
    sizes = _read_json(f"{folder}/{SIZES}")
    return None, sizes if isinstance(sizes, dict) else {}


class ShardIndex:
    """Per-shard counts from img2dataset's stats files or a counting pass, cached in ``cache_dir``."""

    def __init__(self, cache_dir: Path, urls: list[str]):
        self.urls = urls
        digest = hashlib.sha256("\n".join(urls).encode()).hexdigest()[:24]
        self.path = cache_dir / f"{digest}.json"

    def counts(self) -> dict[str, int]:
        cached = _read_json(str(self.path)) if self.path.is_file() else None
        entries = cached.get("shards", {}) if isinstance(cached, dict) else {}
        stamps = {url: _stamp(url) for url in self.urls}
        stale = [url for url in self.urls if url not in entries or entries[url]["stamp"] != stamps[url]]
        if stale:
            with ThreadPoolExecutor(PROBE_THREADS) as pool:
                for url, count in zip(stale, pool.map(_probe_count, stale)):
                    entries[url] = {"count": count, "stamp": stamps[url]}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"shards": entries}, indent=0))
            os.replace(tmp, self.path)  # ranks and runs may count at once; the last complete write wins
        return {url: entries[url]["count"] for url in self.urls}


def _stamp(url: str) -> list[int] | None:
    """A local tar's size and mtime (a rewritten tar is recounted); remote tars are taken as immutable."""
    if not is_local(url):
        return None
    stat = os.stat(url)
    return [stat.st_size, stat.st_mtime_ns]


def _probe_count(url: str) -> int:
    if not url.startswith("pipe:"):
        stats = _read_json(url[: -len(".tar")] + "_stats.json") if url.endswith(".tar") else None
        if isinstance(stats, dict) and isinstance(stats.get("successes"), int):
            return stats["successes"]
    try:
        return count_samples(url)
    except OSError as error:
        raise OSError(f"{url}: {error}") from None


def count_samples(url: str) -> int:
    """Samples (distinct keys, in tar order) in a tar; a cut tar counts up to its cut sample.

    A transport failure raises ``OSError`` (a count of what arrived would be cached as the truth)."""
    count, last = 0, None
    with suppress(tarfile.TarError, EOFError):
        for key, _, _ in tar_members(url):
            if key != last:
                count, last = count + 1, key
    return count


# --- reading -------------------------------------------------------------------------------------


def tar_members(url: str) -> Iterator[tuple[str, str, Callable[[], bytes]]]:
    """``(sample key, field, read)`` per file in a tar, in order; ``read()`` returns the file's bytes.

    A local tar is read with seeks (files nobody reads cost nothing); any other URL is streamed
    (``read`` must then be called before the next member). ``read`` of a file the tar's end
    cuts, or the iteration, raises ``tarfile.ReadError`` or ``OSError`` (cut tar, failed transport).
    """
    if is_local(url):
        with open(url, "rb") as file, tarfile.open(fileobj=file, mode="r:") as tar:
            size = os.fstat(file.fileno()).st_size
            while (member := tar.next()) is not None:
                tar.members.clear()  # tarfile keeps every header otherwise
                key, field = split_name(member.name)
                if not member.isfile() or key is None:
                    continue
                yield key, field, _seek_reader(file, member, size)
        return
    stream = open_stream(url)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            while (member := tar.next()) is not None:
                tar.members.clear()
                key, field = split_name(member.name)
                if member.isfile() and key is not None:
                    yield key, field, _stream_reader(tar, member)
    except GeneratorExit:  # abandoned: the command's error exit (broken pipe) is ours
        with suppress(OSError):
            stream.close()
        raise
    except BaseException as error:
        try:  # a failed transfer (curl's exit status) is why the tar looked empty or cut: say so
            stream.close()
        except OSError as transport:
            raise transport from error
        raise
    stream.close()  # a command that failed after its last byte fails here


def _seek_reader(file, member: tarfile.TarInfo, file_size: int) -> Callable[[], bytes]:
    def read() -> bytes:
        if member.offset_data + member.size > file_size:
            raise tarfile.ReadError(f"{member.name}: data ends at byte {file_size}")
        file.seek(member.offset_data)
        return file.read(member.size)

    return read


def _stream_reader(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Callable[[], bytes]:
    return lambda: tar.extractfile(member).read()


def split_name(name: str) -> tuple[str | None, str]:
    """``dir/key.field.ext`` -> (``dir/key``, ``field.ext``), webdataset's grouping rule."""
    directory, _, base = name.rpartition("/")
    key, dot, field = base.partition(".")
    if not dot or not key:
        return None, ""
    return (f"{directory}/{key}" if directory else key), field.lower()


def open_stream(url: str) -> io.BufferedReader:
    """A remote tar as a read-ahead stream: ``pipe:`` and http(s) by webdataset's gopen, the rest by fsspec."""
    scheme = "pipe" if url.startswith("pipe:") else url.split("://", 1)[0]
    if scheme in ("pipe", "http", "https"):
        import webdataset as wds

        raw = wds.gopen(url, "rb")
    else:
        import fsspec

        raw = fsspec.open(url, "rb").open()
    return io.BufferedReader(ReadAhead(raw))


class ReadAhead(io.RawIOBase):
    """Reads ``stream`` in a thread, up to ``limit`` bytes ahead of the reader, so that network
    latency and bandwidth overlap parsing and decoding. Errors reach the reader in order."""

    def __init__(self, stream, limit: int = 16 << 20, chunk: int = 1 << 20):
        super().__init__()
        self._stream, self._limit, self._chunk = stream, limit, chunk
        self._chunks: deque[memoryview] = deque()
        self._buffered, self._eof, self._error, self._stop = 0, False, None, False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._fill, daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        try:
            while True:
                data = self._stream.read(self._chunk)
                with self._cond:
                    while self._buffered >= self._limit and not self._stop:
                        self._cond.wait()
                    if self._stop:
                        return
                    if not data:
                        self._eof = True
                        self._cond.notify_all()
                        return
                    self._chunks.append(memoryview(data))
                    self._buffered += len(data)
                    self._cond.notify_all()
        except Exception as error:  # the transport failed: the reader raises it after the bytes before it
            with self._cond:
                self._error, self._eof = error, True
                self._cond.notify_all()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        with self._cond:
            while not self._chunks and not self._eof:
                self._cond.wait()
            if not self._chunks:
                if self._error is not None:
                    raise OSError(f"{type(self._error).__name__}: {self._error}") from self._error
                return 0
            chunk = self._chunks[0]
            n = min(len(buffer), len(chunk))
            buffer[:n] = chunk[:n]
            if n == len(chunk):
                self._chunks.popleft()
            else:
                self._chunks[0] = chunk[n:]
            self._buffered -= n
            self._cond.notify_all()
            return n

    def close(self) -> None:
        if self.closed:
            return
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        try:
            self._stream.close()  # unblocks a read in the thread; a pipe waits for its command here
        finally:
            super().close()


def _read_json(url: str) -> Any:
    """A small JSON file at ``url``, or None where there is none (or it is not JSON)."""
    try:
        if is_local(url):
            data = Path(url).read_bytes()
        else:
            with open_stream(url) as stream:
                data = stream.read()
        return json.loads(data)
    except (OSError, ValueError):
        return None
