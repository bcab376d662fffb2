"""Proof that a directory holds the files that were written into it: a manifest of sizes and checksums.

A checkpoint (``trainer_state.json``'s ``files``) or an export (``manifest.json``) records, per
file, its size and the CRC32 of sampled blocks. Reading it back costs one ``stat`` per file plus at
most ``SAMPLES`` blocks of ``BLOCK`` bytes per file, however large: a 10 GB ``model.safetensors``
is 16 reads of 1 MiB (the head, the tail and blocks evenly spaced between), not 10 GB.
Files up to ``WHOLE_LIMIT`` are checksummed whole (states, configs, per-rank JSON).

What it catches: a truncated or extended file (the size: a full disk, a cut copy), a missing
file, a damaged header or trailer (safetensors' JSON header, the zip directory at the end of a
torch file) and a region zeroed or left unwritten by a failed copy larger than the gap between
samples. A bit flipped between samples in a large file is not seen; full CRC32 of 10 GB would
cost a full read (tens of seconds from disk) at every resume.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import zlib
from pathlib import Path

BLOCK = 1 << 20
SAMPLES = 16
WHOLE_LIMIT = 64 << 20
MANIFEST = "manifest.json"  # an export's: every other file
MANIFEST_FORMAT = "mmclip-files-v1"
STATE_FILE = "trainer_state.json"  # a run checkpoint's state, which records every other file

logger = logging.getLogger(__name__)


class IntegrityError(ValueError):
    """A file of a manifest that is missing or not what was written."""


def _checksum(handle, size: int) -> int:
    if size <= WHOLE_LIMIT:
        crc = 0
        while block := handle.read(BLOCK):
            crc = zlib.crc32(block, crc)
        return crc
    crc = 0
    for i in range(SAMPLES):  # offsets 0 .. size - BLOCK: the first block is the head, the last the tail
        handle.seek((size - BLOCK) * i // (SAMPLES - 1))
        crc = zlib.crc32(handle.read(BLOCK), crc)
    return crc


def fingerprint(path: Path, sync: bool = False) -> dict[str, int]:
    """``{"size", "crc32"}`` of one file; ``sync`` first flushes it to disk (for files about to be recorded)."""
    with open(path, "rb") as handle:
        if sync:
            os.fsync(handle.fileno())
        size = os.fstat(handle.fileno()).st_size
        return {"size": size, "crc32": _checksum(handle, size)}


def build_manifest(root: Path, exclude: tuple[str, ...] = ()) -> dict[str, dict[str, int]]:
    """Every file under ``root`` (relative POSIX paths, sorted) but ``exclude``, flushed to disk."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.relative_to(root).as_posix() not in exclude)
    return {path.relative_to(root).as_posix(): fingerprint(path, sync=True) for path in files}


def check_manifest(root: Path, manifest: dict[str, dict[str, int]]) -> None:
    """Raise :class:`IntegrityError` naming the first file that is missing, of another size or checksum."""
    for name, recorded in manifest.items():
        path = root / name
        if not path.is_file():
            raise IntegrityError(f"{path}: missing")
        size = path.stat().st_size
        if size != recorded["size"]:
            raise IntegrityError(f"{path}: {size} bytes, {recorded['size']} were written (truncated or cut copy)")
        if fingerprint(path)["crc32"] != recorded["crc32"]:
            raise IntegrityError(f"{path}: content differs from what was written (checksum mismatch)")


def write_json_atomic(path: Path, data: dict) -> None:
    """``path`` is either absent, its old content, or all of ``data``: never a prefix of it."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        handle.write(json.dumps(data, indent=2))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def replace_directory(tmp: Path, final: Path) -> None:
    """Rename the complete ``tmp`` to ``final``. An existing ``final`` is first moved aside, so at every
    moment one whole copy is in place (never a half-deleted ``final``)."""
    if final.exists():
        old = final.with_name(final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)


def write_directory_manifest(root: Path) -> None:
    """``root/manifest.json`` over every other file of ``root`` (an export, once complete)."""
    write_json_atomic(root / MANIFEST, {"format": MANIFEST_FORMAT, "files": build_manifest(root, exclude=(MANIFEST,))})


def check_source(path: Path) -> None:
    """Verify the directory weights ``path`` (a directory, or a file in one) come from against the
    manifest it carries: a run checkpoint's state file or an export's ``manifest.json``. A directory
    with neither (not written by mmclip: a released model, a timm file) passes."""
    root = path if path.is_dir() else path.parent
    if (root / STATE_FILE).is_file():
        read_verified_state(root, STATE_FILE)
        return
    manifest_file = root / MANIFEST
    if not manifest_file.is_file():
        return
    try:
        manifest = json.loads(manifest_file.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise IntegrityError(f"{manifest_file}: unreadable JSON, truncated? ({error})") from None
    if isinstance(manifest, dict) and manifest.get("format") == MANIFEST_FORMAT:  # else another tool's file
        check_manifest(root, manifest["files"])


def read_verified_state(checkpoint: Path, state_file: str) -> dict:
    """The state of a checkpoint directory whose every file matches the manifest in ``state_file``."""
    path = checkpoint / state_file
    if not path.is_file():
        raise IntegrityError(f"{path}: missing (the checkpoint was never completed)")
    try:
        state = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise IntegrityError(f"{path}: unreadable JSON, truncated? ({error})") from None
    if not isinstance(state, dict) or not isinstance(state.get("files"), dict):
        raise IntegrityError(f"{path}: no file manifest (not written by this mmclip)")
    check_manifest(checkpoint, state["files"])
    return state


def newest_intact(candidates: list[tuple[int, Path]], state_file: str) -> Path | None:
    """The newest candidate ``(step, dir)`` that verifies; each damaged newer one is skipped with a warning."""
    for _, path in sorted(candidates, reverse=True):
        try:
            read_verified_state(path, state_file)
            return path
        except IntegrityError as error:
            logger.warning("skipping damaged checkpoint %s: %s", path.name, error)
    return None
