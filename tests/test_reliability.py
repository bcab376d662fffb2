"""The fault catalogue of docs/reliability.md, each fault produced for real on the tiny stage:
damaged checkpoints (at the latest and at the only one), torn log lines, kill -9 at three moments
of a checkpoint write, a user's mistakes (one line, exit 2, before DeepSpeed), damaged exports,
and DeepSpeed's op cache per environment."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import venv

import pytest
from transformers import XLMRobertaConfig, XLMRobertaModel

from mmclip import integrity
from mmclip.export import export
from mmclip.weights import WeightLoadingError, read_state_dict

from .conftest import REPO
from .test_train import (
    assert_close, read_keys, read_log, run_train, stage_config, train_command, weights, workspace,  # noqa: F401
)

STEP = "step_{:06d}".format


@pytest.fixture(scope="module")
def baseline(workspace):  # noqa: F811
    """20 steps, a checkpoint every 5: what every recovered run must reproduce exactly."""
    output = workspace / "baseline"
    run_train(stage_config(workspace, "baseline"), output)
    return output


def run(config, output, *args, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.run(train_command(config, output, *args), cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def assert_equals_baseline(output, baseline):
    assert [r["loss"] for r in read_log(output)] == pytest.approx([r["loss"] for r in read_log(baseline)], abs=1e-6)
    assert read_keys(output) == read_keys(baseline)
    assert_close(weights(output, 20), weights(baseline, 20), atol=1e-6)


def assert_one_line_error(result, *needles):
    """Exit 2, no traceback, the error on the last line of stderr (log lines before it are warnings),
    and DeepSpeed never started."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("mmclip: ") and all(needle in last for needle in needles), result.stderr[-3000:]
    # DeepSpeed announces its accelerator when imported (real_accelerator.py), before anything else.
    assert "real_accelerator" not in result.stdout + result.stderr, result.stderr[-3000:]


# --- damaged checkpoints -------------------------------------------------------------------------


def _truncate(path):
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(size // 2)


DAMAGES = {
    # a cut copy of DeepSpeed's module file (torch reads it as a zip: RuntimeError without the check)
    "deepspeed_model_states": ("deepspeed/mp_rank_00_model_states.pt", _truncate),
    "trainer_state": ("trainer_state.json", _truncate),  # JSONDecodeError without the check
    "rank_state": ("rank_000.json", os.unlink),  # a lost per-rank loader state
    "weights": ("model.safetensors", _truncate),  # resumed silently without the check
}


def damaged_copy(baseline, tmp_path, damage, steps_kept):
    output = tmp_path / "run"
    shutil.copytree(baseline, output)
    for step in (5, 10, 15, 20):
        if step not in steps_kept:
            shutil.rmtree(output / "checkpoints" / STEP(step))
    name, damage_fn = DAMAGES[damage]
    damage_fn(output / "checkpoints" / STEP(max(steps_kept)) / name)
    return output, name


@pytest.mark.slow
@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_latest_checkpoint_falls_back_to_the_previous(workspace, baseline, tmp_path, damage):  # noqa: F811
    output, name = damaged_copy(baseline, tmp_path, damage, steps_kept=(5, 10, 15, 20))
    result = run(stage_config(workspace, "baseline"), output, "--resume", "auto")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"skipping damaged checkpoint step_000020: {output / 'checkpoints' / STEP(20) / name}" in result.stderr
    assert f"resumed from {output / 'checkpoints' / STEP(15)} at step 15" in result.stderr
    assert_equals_baseline(output, baseline)  # 16..20 trained again, exactly as the first time
    integrity.read_verified_state(output / "checkpoints" / STEP(20), "trainer_state.json")  # rewritten intact


# The silently resumed case runs in make test; the other files in make test-slow.
@pytest.mark.parametrize("damage", [d if d == "weights" else pytest.param(d, marks=pytest.mark.slow) for d in DAMAGES])
def test_damaged_only_checkpoint_is_a_one_line_error(workspace, baseline, tmp_path, damage):  # noqa: F811
    output, name = damaged_copy(baseline, tmp_path, damage, steps_kept=(5,))
    config = stage_config(workspace, "baseline")
    result = run(config, output, "--resume", "auto")
    assert_one_line_error(result, "--resume auto: no intact checkpoint in")
    assert f"skipping damaged checkpoint step_000005: {output / 'checkpoints' / STEP(5) / name}" in result.stderr
    # Named by path, the damaged checkpoint is refused the same way, naming the file.
    result = run(config, output, "--resume", str(output / "checkpoints" / STEP(5)))
    assert_one_line_error(result, str(output / "checkpoints" / STEP(5) / name))
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == ["latest", STEP(5)]  # nothing written


def test_damaged_init_from_and_export_source_are_one_line_errors(workspace, baseline, tmp_path):  # noqa: F811
    output, _ = damaged_copy(baseline, tmp_path, "weights", steps_kept=(5,))
    damaged = output / "checkpoints" / STEP(5)
    config = stage_config(workspace, "from_damaged", init_from=str(damaged))
    assert_one_line_error(run(config, tmp_path / "next"), f"{damaged / 'model.safetensors'}: ")
    assert not (tmp_path / "next").exists()
    result = subprocess.run([sys.executable, "-m", "mmclip.cli", "export", str(damaged), "--output", str(tmp_path / "hf")],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert_one_line_error(result, "mmclip: damaged file: ", "model.safetensors")


def test_an_export_is_verified_when_loaded(baseline, tmp_path):
    hf = export(baseline / "checkpoints" / STEP(20), tmp_path / "hf")
    manifest = json.loads((hf / "manifest.json").read_text())["files"]
    assert {"model.safetensors", "config.json", "modeling_mmclip.py"} <= set(manifest)
    assert read_state_dict(hf)  # intact: loads
    _truncate(hf / "model.safetensors")
    with pytest.raises(WeightLoadingError, match=r"model.safetensors: \d+ bytes, \d+ were written"):
        read_state_dict(hf)


# --- torn log lines ------------------------------------------------------------------------------


def test_torn_jsonl_lines_are_dropped_and_the_run_resumes(workspace, baseline, tmp_path):  # noqa: F811
    """As a SIGKILL during step 18's log writes leaves them: the last checkpoint at 15, logs to 17
    and half a record of 18 in log.jsonl and in keys/rank_000.jsonl."""
    output = tmp_path / "run"
    shutil.copytree(baseline, output)
    shutil.rmtree(output / "checkpoints" / STEP(20))
    for path in (output / "log.jsonl", output / "keys" / "rank_000.jsonl"):
        lines = path.read_text().splitlines(keepends=True)
        assert json.loads(lines[17])["step"] == 18
        path.write_text("".join(lines[:17]) + lines[17][: len(lines[17]) // 2])  # no newline: cut mid-record
    result = run(stage_config(workspace, "baseline"), output, "--resume", "auto")
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("log.jsonl", "rank_000.jsonl"):
        assert f"{name}: dropping torn line(s) 18" in result.stderr
    assert_equals_baseline(output, baseline)
    assert len((output / "log.jsonl").read_text().splitlines()) == 20  # truncated at 15, then 16..20


# --- kill -9 while a checkpoint is written ------------------------------------------------------

# Each moment: the file whose appearance (polled) triggers SIGKILL, and what the checkpoint's
# temporary directory must look like after it, proving the kill landed in that moment.
MOMENTS = {
    # DeepSpeed's save has begun (its first file is there), the per-rank state not written yet
    "deepspeed_save": ("deepspeed", lambda tmp: not (tmp / "rank_000.json").exists()),
    # everything but the state file written (or being flushed)
    "before_state_file": ("model.safetensors", lambda tmp: not (tmp / "trainer_state.json").exists()),
    # the commit: the state file written under a temporary name and flushed, then renamed into place,
    # then the directory renamed and ``latest`` replaced (renames take microseconds: no poll sees
    # the state file in place before its directory is renamed, so the trigger is the state file's write)
    "rename": ("trainer_state.json.tmp", lambda tmp: True),
}


def _moment(output, trigger):
    """The ``.tmp`` directory of a checkpoint being written in which ``trigger`` has appeared, if any."""
    checkpoints = output / "checkpoints"
    if not checkpoints.is_dir():
        return None
    for tmp in checkpoints.glob("step_*.tmp"):
        path = tmp / trigger
        if path.is_file() or (path.is_dir() and any(path.iterdir())):
            return tmp
    return None


@pytest.mark.slow
@pytest.mark.parametrize("moment", MOMENTS)
def test_kill_during_a_checkpoint_write_then_resume(workspace, baseline, tmp_path, moment):  # noqa: F811
    trigger, landed = MOMENTS[moment]
    config, output = stage_config(workspace, "baseline"), tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(train_command(config, output), cwd=REPO, env=env, stderr=subprocess.DEVNULL)
    try:
        deadline, tmp = time.time() + 240, None
        while process.poll() is None and (tmp := _moment(output, trigger)) is None:
            assert time.time() < deadline
            time.sleep(0.0005)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL and tmp is not None, "the run finished before the moment"
    # Killed in the moment: the checkpoint was not finished (for "rename", possibly just renamed).
    renamed = tmp.with_name(tmp.name.removesuffix(".tmp"))
    assert (tmp.is_dir() and landed(tmp)) or (moment == "rename" and renamed.is_dir()), sorted(os.listdir(tmp))
    result = run(config, output, "--resume", "auto")
    assert result.returncode == 0, result.stderr[-3000:]
    assert_equals_baseline(output, baseline)


# --- a user's mistakes -------------------------------------------------------------------------


def _text_checkpoint(directory):
    XLMRobertaModel(XLMRobertaConfig(vocab_size=300, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64)).save_pretrained(directory)
    return directory


def _random_file(path):
    path.write_bytes(os.urandom(4096))
    return path


MISTAKES = {
    "missing_shard_dir": (lambda root: {"data.streams.image_text.shards": [str(root / "no_such_shards")]},
                          ["data error: ", "no_such_shards: no such file or directory"]),
    "empty_shard_dir": (lambda root: {"data.streams.image_text.shards": [str((root / "empty").mkdir() or root / "empty")]},
                        ["data error: ", "empty: no tar files there"]),
    "vision_pretrained_is_a_text_checkpoint": (
        lambda root: {"model_overrides": [f"vision.pretrained={_text_checkpoint(root / 'xlmr')}"]},
        ["weights error: ", "no known vision layout", "it is a hf_xlm_roberta text checkpoint"]),
    "random_safetensors_as_pretrained": (
        lambda root: {"model_overrides": [f"vision.pretrained={_random_file(root / 'random.safetensors')}"]},
        ["weights error: ", "random.safetensors: not a readable safetensors file"]),
    "random_bin_as_pretrained": (
        lambda root: {"model_overrides": [f"text.pretrained={_random_file(root / 'random.bin')}"]},
        ["weights error: ", "random.bin: not a"]),
    "missing_tokenizer": (
        lambda root: {"model_overrides": [f"text.tokenizer={(root / 'no_tokenizer').mkdir() or root / 'no_tokenizer'}"]},
        ["config error: ", "no_tokenizer: not a tokenizer directory"]),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_user_mistakes_are_one_line_before_deepspeed(workspace, tmp_path, mistake):  # noqa: F811
    make, needles = MISTAKES[mistake]
    extra = make(tmp_path)
    if "model_overrides" in extra:  # keep the tokenizer the stage needs unless it is the mistake
        base = [] if mistake == "missing_tokenizer" else [f"text.tokenizer={workspace / 'tokenizer'}"]
        extra["model_overrides"] = base + extra["model_overrides"]
    config = stage_config(workspace, f"mistake_{mistake}", **extra)
    result = run(config, tmp_path / "run")
    assert_one_line_error(result, *needles)
    assert not (tmp_path / "run").exists()  # before any work
    if mistake != "missing_shard_dir":
        return
    debug = subprocess.run([sys.executable, "-m", "mmclip.cli", "--debug", "train", str(config), "--output",
                            str(tmp_path / "run")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert debug.returncode == 1 and "Traceback" in debug.stderr  # --debug: the traceback


# --- DeepSpeed's op cache per environment --------------------------------------------------------


def _environment(path):
    """A virtualenv of its own that sees the shared one's packages (as a second checkout's .venv would have them)."""
    venv.create(path, with_pip=False)
    site = next((path / "lib").glob("python*/site-packages"))
    shared = next(p for p in sys.path if p.endswith("site-packages") and os.path.isdir(p))
    (site / "shared.pth").write_text(shared + "\n")
    return path / "bin" / "python"


def _cache_files(cache):
    """The build's files and their modification times (torch's ``lock`` file is its own, not the build's)."""
    return {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file() and p.name != "lock"}


@pytest.mark.slow
@pytest.mark.timeout(1800)  # two compilations: about 50 s of CPU each on an idle machine, minutes on a busy one
def test_two_environments_do_not_rebuild_each_others_op(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TORCH_EXTENSIONS_DIR"}
    env["PYTHONPATH"] = str(REPO)
    pythons = [_environment(tmp_path / name) for name in ("checkout_a", "checkout_b")]

    def build(python):
        result = subprocess.run([str(python), "-m", "mmclip.train.ops"], cwd=REPO, env=env, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    caches = [tmp_path / name / "torch_extensions" for name in ("checkout_a", "checkout_b")]
    build(pythons[0])
    built_a = _cache_files(caches[0])
    assert any(p.suffix == ".so" for p in built_a), sorted(map(str, built_a))
    build(pythons[1])  # the second checkout builds into its own environment
    assert any(p.suffix == ".so" for p in _cache_files(caches[1]))
    build(pythons[0])  # and the first one's build is still there: loaded, not compiled again (no file rewritten)
    assert _cache_files(caches[0]) == built_a


def test_the_op_builds_with_the_pinned_ninja_whatever_path_says(monkeypatch):
    # Debian's ninja 1.11 first on PATH rebuilt an op the pinned 1.13 had built (45 s at every switch).
    import ninja

    from mmclip.train.ops import use_environment_build

    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", "/unused")  # setdefault keeps it; nothing is built here
    use_environment_build()
    assert shutil.which("ninja") == os.path.join(ninja.BIN_DIR, "ninja")
    version = subprocess.run(["ninja", "--version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith(ninja.__version__), version
    use_environment_build()  # idempotent: PATH is not extended again
    assert os.environ["PATH"] == f"{ninja.BIN_DIR}:/usr/bin:/bin"
