"""What verifying a checkpoint costs at resume (:mod:`mmclip.integrity`): a 10 GB weights file.

Two files stand for a large checkpoint's ``model.safetensors``: a sparse one of ``--size-gb``
(nothing on disk, so its reads cost no I/O: the cost of the checksum work alone), and a real one
of ``--real-gb`` written with random bytes (its sampled blocks read from the page cache or the
disk). For each, the manifest is built (as at save, with fsync) and checked (as at resume), and
a full CRC32 of the real file is timed for comparison: what hashing every byte would cost.

    .venv/bin/python bench/verify_checkpoint.py --output bench/results/verify_checkpoint.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import zlib
from pathlib import Path

from mmclip import integrity


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=10.0, help="the sparse file's size")
    parser.add_argument("--real-gb", type=float, default=1.0, help="the real file's size (written to disk)")
    parser.add_argument("--dir", help="where to write them (default: a temporary directory)")
    parser.add_argument("--output", help="also write the JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        sparse, real = root / "sparse", root / "real"
        sparse.mkdir()
        real.mkdir()
        with open(sparse / "model.safetensors", "wb") as handle:
            handle.truncate(int(args.size_gb * 1e9))
        block = os.urandom(1 << 20)
        with open(real / "model.safetensors", "wb") as handle:
            for _ in range(int(args.real_gb * 1e9) // len(block)):
                handle.write(block)
        result = {}
        for name, directory in (("sparse", sparse), ("real", real)):
            manifest = {}
            build = timed(lambda: manifest.update(integrity.build_manifest(directory)))
            check = timed(lambda: integrity.check_manifest(directory, manifest))
            size = manifest["model.safetensors"]["size"]
            result[name] = {"bytes": size, "build_manifest_s": round(build, 4), "check_manifest_s": round(check, 4)}

        def full_crc() -> None:
            crc = 0
            with open(real / "model.safetensors", "rb") as handle:
                while chunk := handle.read(1 << 24):
                    crc = zlib.crc32(chunk, crc)

        result["real"]["full_crc32_s"] = round(timed(full_crc), 4)
        result["sampled_bytes_per_file"] = integrity.SAMPLES * integrity.BLOCK
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
