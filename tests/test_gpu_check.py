"""bench/gpu_check.sh --cpu-dry-run: the GPU check's whole path on CPU at tiny size, so it cannot rot."""

import json
import os
import subprocess
import sys

import pytest

from .conftest import REPO


@pytest.mark.slow
def test_gpu_check_cpu_dry_run(tmp_path):
    output = tmp_path / "gpu_cpu.json"
    env = dict(os.environ, PYTHON=sys.executable)
    result = subprocess.run([str(REPO / "bench" / "gpu_check.sh"), "--cpu-dry-run", "--output", str(output)], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=580)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.loads(output.read_text())
    assert report["dry_run"] and report["ok"]
    sections = report["sections"]
    assert set(sections) == {"attention", "train_step", "corpus", "deepspeed_run", "encode_image", "finetune_step"}
    attention = sections["attention"]["result"]
    assert attention["ok"] and attention["backends"]["sdpa"]["packed_max_abs_err"] < 1e-4
    assert attention["backends"]["flash"] == {"unavailable": True}  # CPU tensors: never measured as sdpa
    step = sections["train_step"]["result"]["eager"]
    assert {r["impl"] for r in step["rows"] if "samples_per_s" in r} == {"open_clip", "mmclip"}
    assert [s["captions"] for s in step["speedup_at_first_size"]] == ["realistic"]
    run = sections["deepspeed_run"]["result"]
    assert run["ok"] and run["steps"] >= 1 and run["checkpoint"].endswith(f"step_{run['steps']:06d}")
    assert sections["encode_image"]["result"]["images_per_s"] > 0
    assert sections["encode_image"]["result"]["embedding_shape"] == [8, 64]
    finetune = sections["finetune_step"]["result"]
    assert [row["step"] for row in finetune["rows"]] == ["vision twice (GradCache)", "vision once (mmclip)"]
