"""bench/finetune_step.py runs end to end on the tiny towers (CPU) and reports both GradCache steps."""

import json
import subprocess
import sys

from .conftest import REPO


def test_finetune_step_bench(tmp_path):
    output = tmp_path / "finetune_step.json"
    command = [sys.executable, str(REPO / "bench" / "finetune_step.py"), "--size", "tiny", "--image-size", "112",
               "--batch", "4", "--chunk", "2", "--warmup", "0", "--steps", "1", "--threads", "1",
               "--output", str(output)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(output.read_text())
    assert json.loads(result.stdout) == report
    assert [row["step"] for row in report["rows"]] == ["vision twice (GradCache)", "vision once (mmclip)"]
    assert all(row["samples_per_s"] > 0 for row in report["rows"]) and report["grad_cache_chunk"] == 2
    assert report["speedup"] == report["rows"][0]["step_s"] / report["rows"][1]["step_s"]
