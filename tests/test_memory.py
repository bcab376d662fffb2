"""`mmclip info STAGE.yaml --memory`: the activation formula against the tensors autograd saves, the
ZeRO sharding of model states, GradCache and checkpointing in the estimate, and the CLI."""

import json

import pytest
import torch

from mmclip import create_model
from mmclip.cli import main
from mmclip.config import load_config
from mmclip.factory import load_model_config
from mmclip.train.config import TrainConfig
from mmclip.train.memory import (
    estimate_memory,
    model_state_bytes,
    text_bytes_per_token_layer,
    vision_bytes_per_token_last_layer,
    vision_bytes_per_token_layer,
    vision_tokens,
)

from .conftest import REPO, TINY


def saved_activation_bytes(model, run, inputs):
    """Bytes of the distinct storages autograd saves for the backward, parameters and inputs left out."""
    skip = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *inputs]}
    storages = {}

    def pack(tensor):
        ptr = tensor.untyped_storage().data_ptr()
        if ptr not in skip:
            storages[ptr] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run()
    return sum(storages.values())


@pytest.mark.parametrize("patch_dropout", [0.0, 0.5])
def test_activation_formula_matches_saved_tensors(patch_dropout):
    torch.manual_seed(0)
    model = create_model(TINY, overrides=[f"vision.patch_dropout={patch_dropout}", "text.hidden_dropout=0.1",
                                          "vision.image_size=112"]).train()
    batch, length = 8, 40
    pixels = torch.randn(batch, 3, 112, 112)
    vision = model.config.vision
    fp32 = 2  # the formula counts bf16 bytes
    per_token = vision_bytes_per_token_layer(vision) * (vision.depth - 1) + vision_bytes_per_token_last_layer(vision)
    estimate = fp32 * per_token * vision_tokens(vision, 112, patch_dropout) * batch
    measured = saved_activation_bytes(model, lambda: model.vision(pixels), [pixels])
    assert 0.85 < measured / estimate < 1.15

    ids = torch.randint(5, 1000, (batch, length))
    mask = torch.ones_like(ids)
    text = model.config.text
    estimate = fp32 * text_bytes_per_token_layer(text) * text.depth * length * batch
    measured = saved_activation_bytes(model, lambda: model.text(ids, mask), [ids, mask])
    assert 0.85 < measured / estimate < 1.2  # masks are a byte under fp32 too: the formula doubles them


def test_model_states_shard_as_zero_stages():
    params, ranks = 1_000, 8
    assert model_state_bytes(params, ranks, 0, bf16=True) == {"weights": 2000, "gradients": 2000, "optimizer": 12000}
    assert model_state_bytes(params, ranks, 1, bf16=True) == {"weights": 2000, "gradients": 2000, "optimizer": 1500}
    assert model_state_bytes(params, ranks, 2, bf16=True) == {"weights": 2000, "gradients": 250, "optimizer": 1500}
    assert model_state_bytes(params, ranks, 3, bf16=True) == {"weights": 250, "gradients": 250, "optimizer": 1500}
    assert model_state_bytes(params, 1, 1, bf16=False) == {"weights": 4000, "gradients": 4000, "optimizer": 8000}


def test_chunks_and_checkpointing_bound_activations():
    def peak(*overrides):
        config = load_config(TrainConfig, REPO / "configs" / "stage2.yaml", list(overrides))
        phase = estimate_memory(config, load_model_config(REPO / config.model), 8)["phases"][0]
        return phase["gb"]["activations"], phase["total_gb"]

    whole, _ = peak("grad_cache_chunk={}", "gradient_checkpointing=false")
    chunked, total = peak()  # 32 + 32 per rank, no checkpointing
    # One chunk of 32 of one stream instead of both streams' whole 1,024: over 32x less.
    assert whole / chunked > 32
    assert peak("grad_cache_chunk={}", "gradient_checkpointing=true")[0] < whole / 10
    assert total > chunked


def test_cli_info_memory(capsys):
    assert main(["info", str(REPO / "configs" / "stage1.yaml"), "--memory", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["world_size"] == 8 and report["grad_cache_chunk"] == {"image_text": 64, "text_pair": 128}
    assert [p["image_size"] for p in report["phases"]] == [224, 384] and 0 < report["peak_gb"] < 80
    assert main(["info", str(REPO / "configs" / "stage1.yaml"), "--memory"]) == 0
    assert "fits in 80 GB" in capsys.readouterr().out
    assert main(["info", str(REPO / "configs" / "stage1.yaml"), "--memory", "--world-size", "3"]) == 2
    assert "data.streams.text_pair.batch_size" in capsys.readouterr().err
