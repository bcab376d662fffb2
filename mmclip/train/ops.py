"""DeepSpeed's JIT-compiled op, cached per environment and built once at install.

On a CPU accelerator ``deepspeed.init_distributed`` compiles its shared-memory collective
(``deepspeed_shm_comm``, about 50 s of CPU). torch caches it by op name in one per-user folder
(``~/.cache/torch_extensions``), so two checkouts with their own environments on one machine
overwrite each other's build and every ``mmclip train`` compiles again. The cache lives in the
environment instead (``<venv>/torch_extensions``), unless ``TORCH_EXTENSIONS_DIR`` is set;
``make install`` builds it (``python -m mmclip.train.ops``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def use_environment_cache() -> Path:
    """Point torch's extension cache into this environment (a user's own setting is kept); the folder."""
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))
    return Path(os.environ["TORCH_EXTENSIONS_DIR"])


def build() -> None:
    """Compile (or load from the cache) the op ``deepspeed.init_distributed`` needs on this machine."""
    use_environment_cache()
    from deepspeed.comm.torch import build_shm_op

    build_shm_op()


if __name__ == "__main__":
    build()
    print(f"DeepSpeed ops cached in {os.environ['TORCH_EXTENSIONS_DIR']}")
