"""Config errors name the key and the file, before anything is built."""

import pytest

from mmclip import ConfigError, create_model, load_model_config

from .conftest import TINY


def write(tmp_path, text):
    path = tmp_path / "model.yaml"
    path.write_text(text)
    return path


def test_yaml_loads_into_typed_configs(tiny_config):
    assert tiny_config.vision.width == 64 and tiny_config.text.position_embedding == "rotary"
    assert isinstance(tiny_config.text.rotary_base, float)


def test_unknown_key_names_key_file_and_suggestion(tmp_path):
    path = write(tmp_path, "vision:\n  patch_sise: 14\n")
    with pytest.raises(ConfigError, match=rf"{path}: unknown key 'vision.patch_sise' \(did you mean 'vision.patch_size'\?\)"):
        load_model_config(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("vision:\n  depth: two\n", "vision.depth: expected int, got 'two'"),
        ("embed_dim: 64.5\n", "embed_dim: expected int"),
        ("vision:\n  depth: true\n", "vision.depth: expected int, got True"),
        ("matryoshka_dims: 64\n", "matryoshka_dims: expected a list"),
        ("text: [1, 2]\n", "text: expected a mapping"),
    ],
)
def test_wrong_types_name_the_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=f"{path}: " + message.replace("[", r"\[").replace("(", r"\(")):
        load_model_config(path)


def test_impossible_values_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"vision.width: must be divisible by num_heads"):
        load_model_config(TINY, ["vision.num_heads=3"])
    with pytest.raises(ConfigError, match=r"matryoshka_dims: must end with embed_dim \(64\)"):
        load_model_config(TINY, ["matryoshka_dims=[16,32]"])
    with pytest.raises(ConfigError, match=r"text.position_embedding: must be one of"):
        load_model_config(TINY, ["text.position_embedding=alibi"])
    with pytest.raises(ConfigError, match=r"attention_backend: must be one of"):
        load_model_config(TINY, ["attention_backend=naive"])


def test_missing_files_name_the_key(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(ConfigError, match=rf"{TINY}: vision.pretrained: no such file or directory: {missing}"):
        create_model(TINY, overrides=[f"vision.pretrained={missing}"])
    with pytest.raises(ConfigError, match=r"config file not found"):
        load_model_config(tmp_path / "absent.yaml")


def test_overrides_and_yaml_floats(tmp_path):
    path = write(tmp_path, "vision:\n  layer_norm_eps: 1e-6\n  width: 1024\n")
    config = load_model_config(path, ["vision.image_size=384"])
    assert config.vision.layer_norm_eps == 1e-6 and config.vision.image_size == 384
    with pytest.raises(ConfigError, match="not of the form"):
        load_model_config(TINY, ["vision.image_size"])


def test_dict_configs_are_validated_too():
    with pytest.raises(ConfigError, match=r"<dict>: unknown key 'visoin'"):
        create_model({"visoin": {}})
