"""`sbatch slurm/stage1.sh`, unchanged, on a real one-node SLURM cluster (slurm/local-cluster.sh:
Debian's slurmctld, slurmd and munge, 8 fake GPUs) with the tiny model and 2 CPU tasks: the job
trains, checkpoints and exits 0; a second submission resumes from the first's checkpoint, is
requeued mid-run (`scontrol requeue`: SIGTERM, checkpoint, exit 75, requeue) and finishes, with
every sample of the epoch seen exactly once across the three runs."""

import json
import os
import re
import subprocess
import sys
import time

import pytest

from .conftest import REPO
from .test_train import read_keys, read_log, stage_config, write_corpus

CLUSTER = REPO / "slurm" / "local-cluster.sh"


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.fail("the SLURM tests start a local cluster and need root (as CI runs)")
    subprocess.run([str(CLUSTER), "start"], check=True, timeout=900)
    try:
        yield
    finally:
        subprocess.run([str(CLUSTER), "stop"], check=True, timeout=120)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm")
    write_corpus(root)
    return root


def sbatch(workspace, output, steps):
    """Submit slurm/stage1.sh as a user would, its settings through the environment and sbatch options."""
    config = stage_config(workspace, "slurm", steps=12, **{"checkpoint.every_steps": 3, "data.streams.image_text.num_workers": 1})
    env = {
        **os.environ,
        "MMCLIP_CONFIG": str(config), "MMCLIP_OUTPUT": str(output), "MMCLIP_SET": f"steps={steps}",
        "MMCLIP_PYTHON": sys.executable,
    }
    command = ["sbatch", "--parsable", "--ntasks-per-node=2", "--cpus-per-task=1", "--time=10",
               f"--output={workspace}/%x-%j.out", str(REPO / "slurm" / "stage1.sh")]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=True)
    return result.stdout.strip().split(";")[0]


def job_info(job):
    text = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True, check=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", text))


def wait_job(workspace, job, timeout=300):
    deadline = time.time() + timeout
    while (info := job_info(job))["JobState"] not in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"):
        assert time.time() < deadline, f"job {job} still {info['JobState']}"
        time.sleep(0.5)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", job_log(workspace, job)[-4000:]
    return info


def job_log(workspace, job):
    return (workspace / f"mmclip-stage1-{job}.out").read_text()


@pytest.mark.slow
def test_submit_resume_and_requeue(cluster, workspace):
    output = workspace / "run"
    # 1. A fresh job: 6 steps on 2 CPU ranks, checkpoints at 3 and 6, exit 0.
    first = sbatch(workspace, output, steps=6)
    wait_job(workspace, first)
    log = job_log(workspace, first)
    assert "no CUDA device: CPU ranks, gloo" in log and "2 tasks" in log
    assert [r["step"] for r in read_log(output)] == list(range(1, 7))
    assert (output / "checkpoints" / "latest").read_text().strip() == "step_000006"
    assert sorted(p.name for p in (output / "checkpoints" / "step_000006").glob("rank_*")) == [
        "rank_000.json", "rank_001.json"]

    # 2. A second submission continues the run to 12 steps; once it has saved step 9, the job is
    # requeued: SIGTERM to its tasks, a checkpoint, exit 75, and the requeued job resumes again.
    second = sbatch(workspace, output, steps=12)
    deadline = time.time() + 300
    while not (output / "checkpoints" / "step_000009").exists():
        assert time.time() < deadline and job_info(second)["JobState"] in ("PENDING", "RUNNING"), job_log(workspace, second)
        time.sleep(0.05)
    subprocess.run(["scontrol", "requeue", second], check=True, timeout=30)
    info = wait_job(workspace, second)
    log = job_log(workspace, second)
    assert info["Restarts"] == "1"
    assert f"resumed from {output}/checkpoints/step_000006" in log
    stopped = int(re.search(r"SIGTERM: stopped after step (\d+)", log).group(1))
    assert 9 <= stopped < 12 and f"resumed from {output}/checkpoints/step_{stopped:06d}" in log
    assert "exit status 75" in log

    assert [r["step"] for r in read_log(output)] == list(range(1, 13))
    assert (output / "checkpoints" / "latest").read_text().strip() == "step_000012"
    # 12 steps of 2 ranks x 2 samples are one epoch of the 48 samples: each seen exactly once.
    ranks = [read_keys(output, rank) for rank in (0, 1)]
    assert [r["step"] for r in ranks[0]] == [r["step"] for r in ranks[1]] == list(range(1, 13))
    for stream, prefix in (("text_pair", "pair"), ("image_text", "img")):
        seen = sorted(key for keys in ranks for record in keys for key in record[stream])
        assert seen == [f"{prefix}{i:04d}" for i in range(48)], stream
    assert json.loads((output / "checkpoints" / "step_000012" / "trainer_state.json").read_text())["samples"] == {
        "text_pair": 48, "image_text": 48}
