"""DeepSpeed's JIT-compiled op, cached per environment, built by the pinned ninja, once at install.

On a CPU accelerator ``deepspeed.init_distributed`` compiles its shared-memory collective
(``deepspeed_shm_comm``, about 45 s of CPU). torch caches it by op name in one per-user folder
(``~/.cache/torch_extensions``), so two checkouts with their own environments on one machine
overwrite each other's build and every ``mmclip train`` compiles again. The cache lives in the
environment instead (``<venv>/torch_extensions``), unless ``TORCH_EXTENSIONS_DIR`` is set;
``make install`` builds it (``python -m mmclip.train.ops``).

torch runs the first ``ninja`` on ``PATH``. Two ninja versions (Debian's 1.11, the pinned 1.13)
record a build's commands under different hashes, so each takes the other's build for stale and
compiles again: whether ``<venv>/bin`` was on ``PATH`` decided whether a run rebuilt the op. The
pinned ninja (the ``ninja`` package's) comes first on ``PATH`` for every build.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def use_environment_build() -> Path:
    """Point torch's extension cache into this environment (a user's own setting is kept) and put
    the pinned ninja first on ``PATH``; the cache folder."""
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))
    try:
        from ninja import BIN_DIR as ninja_dir  # "" where the package's binary is not found
    except ImportError:  # no ninja package (the GPU image): whichever PATH finds
        ninja_dir = ""
    path = os.environ.get("PATH", "")
    if ninja_dir and path.split(os.pathsep)[0] != ninja_dir:
        os.environ["PATH"] = os.pathsep.join([ninja_dir, path]) if path else ninja_dir
    return Path(os.environ["TORCH_EXTENSIONS_DIR"])


def build() -> None:
    """Compile (or load from the cache) the op ``deepspeed.init_distributed`` needs on this machine."""
    use_environment_build()
    from deepspeed.comm.torch import build_shm_op

    build_shm_op()


if __name__ == "__main__":
    build()
    print(f"DeepSpeed ops cached in {os.environ['TORCH_EXTENSIONS_DIR']}")
