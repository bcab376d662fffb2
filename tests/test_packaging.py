"""The package as a user gets it: cheap to import, installable, and working from any directory.

* ``import mmclip`` (and building the CLI) loads neither LUSIFER nor transformers' Mistral or
  generation stack;
* ``pip install .`` (a real, non-editable install into a fresh target) then ``mmclip train`` of a
  shipped config from another directory, with the configs from the package data;
* a stage YAML's references resolve relative to it, and a moved run directory resumes, exports and
  loads from yet another directory.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from mmclip import checkpoint

from .conftest import REPO, TINY
from .test_train import write_corpus

HEAVY = ("transformers.models.mistral", "transformers.generation", "mmclip.models.lusifer", "peft", "deepspeed",
         "sklearn")


def modules_loaded_by(code):
    probe = f"import sys\n{code}\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().replace("'", '"'))


def test_import_mmclip_loads_neither_lusifer_nor_mistral():
    assert modules_loaded_by("import mmclip, mmclip.cli\nmmclip.cli.build_parser()") == []
    # Building a CLIP model does not need LUSIFER either.
    assert modules_loaded_by(f"import mmclip\nmmclip.create_model({str(TINY)!r})") == []


def clean_env(**extra):
    """The environment without this checkout on the path: only what is installed is imported."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def small_demo_stage(corpus):
    """``--set`` overrides running the shipped demo stage 1 on the test corpus for 2 steps."""
    return [
        f"data.streams.text_pair.shards={json.dumps([str(corpus / 'text_pair')])}",
        f"data.streams.image_text.shards={json.dumps([str(corpus / 'image_text')])}",
        "data.streams.text_pair.batch_size=4", "data.streams.image_text.batch_size=4",
        "model_overrides=" + json.dumps([f"text.tokenizer={corpus / 'tokenizer'}"]),
        "steps=2", "clip.resolution_schedule=[]", "optimizer.warmup_steps=1", "logging.tensorboard=false",
    ]


@pytest.mark.slow
def test_pip_install_then_train_a_shipped_config_from_another_directory(tmp_path):
    source = tmp_path / "source"  # a copy: the build writes build/ and *.egg-info next to the sources
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for package in ("mmclip", "data_pipelines", "eval"):
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    site = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
               "--target", str(site), str(source)]
    result = subprocess.run(install, capture_output=True, text=True, timeout=600, env=clean_env())
    assert result.returncode == 0, result.stderr[-3000:]
    stage = site / "mmclip" / "configs" / "demo" / "stage1.yaml"
    assert stage.is_file() and (site / "mmclip" / "configs" / "model" / "demo.yaml").is_file()

    env = clean_env(PYTHONPATH=str(site))
    where = subprocess.run([sys.executable, "-c", "import mmclip; print(mmclip.__file__)"], capture_output=True,
                           text=True, env=env, cwd=tmp_path, timeout=120)
    assert where.stdout.strip() == str(site / "mmclip" / "__init__.py")

    corpus, elsewhere = tmp_path / "corpus", tmp_path / "elsewhere"
    corpus.mkdir()
    elsewhere.mkdir()
    write_corpus(corpus)
    overrides = [arg for item in small_demo_stage(corpus) for arg in ("--set", item)]
    train = [str(site / "bin" / "mmclip"), "train", str(stage), "--output", "run", *overrides]
    result = subprocess.run(train, capture_output=True, text=True, env=env, cwd=elsewhere, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    final = elsewhere / "run" / "checkpoints" / "step_000002"
    assert checkpoint.read_family(final) == "clip" and (final / "tokenizer" / "tokenizer_config.json").is_file()


@pytest.mark.slow
def test_relative_references_and_a_moved_run_directory(tmp_path):
    """A stage YAML naming its model YAML (which names its tokenizer) relatively, run from another
    directory; the run directory moved; resumed, exported and loaded from a third directory."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_corpus(corpus)
    project = tmp_path / "project"
    (project / "model").mkdir(parents=True)
    shutil.copytree(corpus / "tokenizer", project / "model" / "tokenizer")
    model = yaml.safe_load(TINY.read_text())
    model["text"]["tokenizer"] = "tokenizer"  # relative to the model YAML
    (project / "model" / "tiny.yaml").write_text(yaml.safe_dump(model))
    stage = {
        "model": "model/tiny.yaml",  # relative to the stage YAML
        "steps": 4,
        "data": {
            "image_size": 56, "context_length": 16, "num_workers": 0, "shuffle_block": 1, "interleave": 1,
            "streams": {
                "text_pair": {"kind": "text_pair", "shards": [str(corpus / "text_pair")], "batch_size": 4},
                "image_text": {"kind": "image_text", "shards": [str(corpus / "image_text")], "batch_size": 4},
            },
        },
        "optimizer": {"warmup_steps": 1},
        "precision": "fp32",
        "checkpoint": {"every_steps": 2, "keep_last": 5},
        "logging": {"every_steps": 1, "tensorboard": False},
    }
    (project / "stage.yaml").write_text(yaml.safe_dump(stage))
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    env = clean_env(PYTHONPATH=str(REPO))

    def mmclip(*args, cwd):
        result = subprocess.run([sys.executable, "-m", "mmclip.cli", *map(str, args)], capture_output=True, text=True,
                                env=env, cwd=cwd, timeout=600)
        assert result.returncode == 0, result.stderr[-4000:]
        return result

    mmclip("train", "../project/stage.yaml", "--output", "run", "--set", "steps=2", cwd=first)
    moved = tmp_path / "moved_run"
    shutil.move(first / "run", moved)
    mmclip("train", project / "stage.yaml", "--output", moved, "--resume", "auto", cwd=second)
    log = [json.loads(line) for line in (moved / "log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in log] == [1, 2, 3, 4]

    final = moved / "checkpoints" / "step_000004"
    assert yaml.safe_load((final / "model.yaml").read_text())["text"]["tokenizer"] == "tokenizer"
    shutil.rmtree(project / "model" / "tokenizer")  # the checkpoint carries its own copy
    mmclip("export", final.relative_to(tmp_path), "--output", "hf", cwd=tmp_path)
    assert (tmp_path / "hf" / "tokenizer_config.json").is_file()
    loaded = checkpoint.load(final)
    assert loaded.config.text.tokenizer == str(final / "tokenizer")
