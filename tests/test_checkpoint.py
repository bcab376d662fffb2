"""mmclip.checkpoint: the model checkpoints both training families write are detected and loaded by
the one checkpoint module, and stay loadable when moved."""

import shutil

import pytest
import torch
import yaml

from data_pipelines.synthetic.tokenizer import train_tokenizer
from mmclip import ConfigError, checkpoint
from mmclip.models import MMCLIP, LusiferModel
from mmclip.train import load_train_config
from mmclip.train.families import family_class

from .conftest import MULTILINGUAL_SENTENCES, TINY
from .test_lusifer import stage_config as lusifer_stage_config
from .test_lusifer import workspace  # noqa: F401 (the fixture: tokenizers and a tiny Mistral)


def family_checkpoint(config_path, directory, phase_step=0):
    """The model checkpoint the stage's family writes (as a run checkpoint does), the trained model
    and the weights the family made of its state dict."""
    config, model_config = load_train_config(config_path, [], world_size=1)
    family = family_class(config.family)(config, model_config)
    model = family.build_model(family.phase(phase_step), None)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    family.write_model(directory, model, state)
    return model, family.checkpoint_weights(model, state)


def assert_same_weights(loaded, written):
    state = loaded.state_dict()
    assert state.keys() == written.keys()
    for key, value in written.items():
        assert state[key].shape == value.shape, key
        torch.testing.assert_close(state[key], value, rtol=0, atol=0)


def test_clip_checkpoint_is_detected_loaded_and_movable(tmp_path):
    train_tokenizer(MULTILINGUAL_SENTENCES * 20, 300, tmp_path / "tokenizer")
    stage = {
        "model": str(TINY), "model_overrides": [f"text.tokenizer={tmp_path / 'tokenizer'}"], "steps": 4,
        "data": {"streams": {"pairs": {"kind": "text_pair", "shards": ["unused"], "batch_size": 2}}},
        "clip": {"resolution_schedule": [{"step": 0, "image_size": 84}]}, "precision": "fp32",
    }
    (tmp_path / "stage.yaml").write_text(yaml.safe_dump(stage))
    model, weights = family_checkpoint(tmp_path / "stage.yaml", tmp_path / "ckpt")
    assert model.logit_scale_image_text.shape == (1,)  # trained as [1] (DeepSpeed), checkpointed 0-d

    moved = tmp_path / "elsewhere" / "ckpt"
    shutil.move(tmp_path / "ckpt", moved)
    shutil.rmtree(tmp_path / "tokenizer")  # the checkpoint carries its own copy
    assert checkpoint.is_checkpoint(moved) and checkpoint.read_family(moved) == "clip"
    written = yaml.safe_load((moved / "model.yaml").read_text())
    assert written["family"] == "clip" and written["text"]["tokenizer"] == "tokenizer"
    loaded = checkpoint.load(moved)
    assert isinstance(loaded, MMCLIP) and loaded.config.text.tokenizer == str(moved / "tokenizer")
    assert loaded.vision.config.image_size == 84  # the grid of the trained position embedding
    assert loaded.logit_scale_image_text.shape == ()
    assert_same_weights(loaded, weights)


def test_lusifer_checkpoint_is_detected_and_loaded(workspace, tmp_path):  # noqa: F811
    model, weights = family_checkpoint(lusifer_stage_config(workspace, "ckpt", "finetune"), tmp_path / "ckpt")
    assert any("lora" in key for key in model.state_dict())  # trained with adapters
    assert checkpoint.read_family(tmp_path / "ckpt") == "lusifer"
    written = yaml.safe_load((tmp_path / "ckpt" / "model.yaml").read_text())
    assert written["llm_pretrained"] is None and written["llm"]["hidden_size"] == model.config.embed_dim
    assert (tmp_path / "ckpt" / "llm_tokenizer" / "tokenizer.json").is_file()
    loaded = checkpoint.load(tmp_path / "ckpt")
    assert isinstance(loaded, LusiferModel)
    assert loaded.config.encoder.tokenizer == str(tmp_path / "ckpt" / "tokenizer")
    # The family merged its LoRA adapters into plain weights, which load under the module's own names.
    assert_same_weights(loaded, weights)
    assert not any("lora" in key for key in weights)


def test_unknown_family_tag_is_a_config_error(tmp_path):
    (tmp_path / "model.yaml").write_text("family: siglip\n")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"model.yaml: family: must be one of \('clip', 'lusifer'\)"):
        checkpoint.read_config(tmp_path)
