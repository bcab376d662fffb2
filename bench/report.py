"""What every benchmark here ends with: its JSON report on stdout, and in ``--output`` if given."""

from __future__ import annotations

import json
from pathlib import Path


def emit(report: dict, output: Path | None) -> None:
    text = json.dumps(report, indent=2)
    print(text)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text + "\n")
