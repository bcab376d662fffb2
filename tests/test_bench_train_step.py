"""bench/train_step.py runs end to end on the tiny towers (CPU) and reports both sides per setting."""

import json
import subprocess
import sys

from .conftest import REPO


def test_train_step_bench_tiny(tmp_path):
    output = tmp_path / "train_step.json"
    command = [sys.executable, str(REPO / "bench" / "train_step.py"), "--tiny", "--sizes", "224,112", "--compile", "off",
               "--backends", "sdpa,flash", "--captions", "realistic", "--batch", "2", "--warmup", "1", "--steps", "1", "--threads", "1",
               "--optimizer", "fused", "--output", str(output)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(output.read_text())
    assert json.loads(result.stdout) == report
    assert report["device"].startswith("cpu") and report["micro_batch"] == 2 and report["activation_checkpointing"]
    assert report["optimizer"] == "fused AdamW on both sides"
    measured = [r for r in report["rows"] if "samples_per_s" in r]
    settings = {(r["impl"], r.get("image_size"), r["patch_dropout"]) for r in measured}
    assert settings == {("open_clip", 224, 0.0), ("open_clip", 224, 0.5), ("mmclip", 224, 0.0), ("mmclip", 224, 0.5),
                        ("mmclip", 112, 0.0), ("mmclip", 112, 0.5)}
    assert all(r["samples_per_s"] > 0 and r["tflops"] > 0 and r["mfu"] is None for r in measured)
    # flash attention needs CUDA: reported as unavailable, not silently measured as sdpa.
    assert [r["attention"] for r in report["rows"] if r.get("unavailable")] == ["flash", "flash"]
    assert len(report["speedup_at_first_size"]) == 2
    # Realistic captions: open_clip pads to the context, mmclip to the batch's longest caption.
    assert {r["captions"] for r in measured} == {"realistic"}
    for r in measured:
        assert r["caption_tokens_mean"] < 77
        assert r["text_batch_shape"][1] == 77 if r["impl"] == "open_clip" else r["text_batch_shape"][1] < 77
    assert all(s["mmclip_over_open_clip"] > 0 for s in report["speedup_at_first_size"])
