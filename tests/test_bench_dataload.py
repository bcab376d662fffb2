"""bench/dataload.py --source http runs end to end over a loopback server and reports every loader's rate."""

import json
import subprocess
import sys

from .conftest import REPO


def test_dataload_bench_http(tmp_path):
    output = tmp_path / "dataload.json"
    command = [sys.executable, str(REPO / "bench" / "dataload.py"), "--source", "http", "--sizes", "64",
               "--workers", "1", "--samples", "16", "--batch-size", "8", "--images", "4", "--output", str(output)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(output.read_text())
    assert json.loads(result.stdout) == report and report["source"] == "http"
    (row,) = report["results"]
    rates = {name: row[f"{name}_samples_per_s"] for name in ("baseline", "ours", "ours_local")}
    assert all(rate > 0 for rate in rates.values())
    assert row["http_over_local"] == rates["ours"] / rates["ours_local"]
    # The loopback server served tars to both HTTP loaders (the local one never asks it). Its CPU
    # share is reported per loader, but a run this small can fall under the clock's 10 ms tick.
    assert report["server_requests"]["baseline"] > 0 and report["server_requests"]["ours"] > 0
    assert set(row["server_cores_busy"]) == set(rates) and min(row["server_cores_busy"].values()) >= 0
    assert row["pixel_values"]["ours"] == [[8, 3, 64, 64], "torch.uint8"]
