"""The speed paths compute what the plain paths do: cached RoPE tables, the text tower's packed
linear layers, and training under torch.compile. (Speed itself is measured in bench/, not here.)"""

import json

import pytest
import torch

from mmclip import create_model
from mmclip.models.rope import vision_rotary

from .conftest import TINY
from .test_train import read_log, run_train, stage_config, workspace  # noqa: F401 (workspace: a fixture)


def test_rope_tables_first_built_under_inference_mode_still_train():
    # An embedding pass under inference_mode (a filter, an eval) must not cache inference tensors
    # that a later training step would need to save for backward.
    torch.manual_seed(0)
    model = create_model(TINY)
    size = 48  # a grid no other test has cached yet
    model.vision.set_image_size(size)
    ids = torch.tensor([[0, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 2]])
    with torch.inference_mode():
        model.encode_image(torch.randn(1, 3, size, size))
        model.encode_text(ids)
    loss = model.encode_image(torch.randn(1, 3, size, size)).sum() + model.encode_text(ids).sum()
    loss.backward()
    assert all(p.grad is not None for p in model.vision.blocks[0].parameters())


def test_rope_tables_survive_a_bf16_cast_and_a_resolution_change():
    torch.manual_seed(0)
    model = create_model(TINY).eval()
    with torch.no_grad():  # weights a bf16 round trip keeps exactly: only an fp32 table could change
        for p in model.parameters():
            p.copy_(p.bfloat16().float())
    pixels = torch.randn(2, 3, 56, 56)
    config = model.vision.config
    before = model.encode_image(pixels)
    table = vision_rotary(config.grid_size, config.head_dim, config.rope_reference_grid, config.rope_theta,
                          pixels.device, prefix_tokens=1)
    assert table.dtype == torch.float32

    model.bfloat16()
    bf16 = model.encode_image(pixels.bfloat16())
    assert bf16.dtype == torch.bfloat16 and torch.allclose(bf16.float(), before, atol=0.05)
    model.float()
    assert torch.equal(model.encode_image(pixels), before)

    pos_embed = model.vision.pos_embed.detach().clone()
    model.vision.set_image_size(112)
    assert model.encode_image(torch.randn(2, 3, 112, 112)).shape == before.shape
    assert vision_rotary(8, config.head_dim, config.rope_reference_grid, config.rope_theta, pixels.device,
                         prefix_tokens=1).shape == (1 + 64, config.head_dim // 2, 2)
    model.vision.set_image_size(56)
    model.vision.pos_embed.data.copy_(pos_embed)  # bicubic resampling there and back is not exact
    assert torch.equal(model.encode_image(pixels), before)
    # The cached table is the one a fresh computation gives, and no call has written into it.
    fresh = vision_rotary.__wrapped__(config.grid_size, config.head_dim, config.rope_reference_grid,
                                      config.rope_theta, pixels.device, prefix_tokens=1)
    assert torch.equal(table, fresh)


@pytest.mark.parametrize("position_embedding", ["rotary", "absolute"])
def test_packed_linear_text_path_equals_padded_path(position_embedding):
    """sdpa on CPU cannot run packed sequences: the packed path re-pads around attention only."""
    torch.manual_seed(0)
    model = create_model(TINY, overrides=[f"text.position_embedding={position_embedding}"]).train()
    lengths = torch.tensor([12, 7, 3, 1])
    mask = torch.arange(12)[None, :] < lengths[:, None]
    ids = torch.randint(3, 1000, (4, 12)).masked_fill(~mask, 1)
    outputs = {}
    for packed in (False, True):
        model.zero_grad()
        states, _ = model.text.token_states(ids, mask.long(), packed=packed)
        pooled = model.text(ids, mask.long(), packed=packed)
        (states.square().sum() + pooled.sum()).backward()
        grads = {name: p.grad.clone() for name, p in model.text.named_parameters() if p.grad is not None}
        outputs[packed] = states, pooled, grads
    (padded, padded_pooled, padded_grads), (packed, packed_pooled, packed_grads) = outputs[False], outputs[True]
    assert torch.allclose(packed, padded, atol=1e-5) and torch.allclose(packed_pooled, padded_pooled, atol=1e-5)
    assert torch.equal(packed[~mask], torch.zeros_like(packed[~mask]))
    assert padded_grads.keys() == packed_grads.keys()
    for name in padded_grads:
        assert torch.allclose(packed_grads[name], padded_grads[name], atol=1e-5), name
    # The default packs a batch with padding and leaves one without as it is.
    assert torch.allclose(model.text(ids, mask.long()), padded_pooled, atol=1e-5)


@pytest.mark.slow
def test_compiled_training_matches_eager(workspace, tmp_path):  # noqa: F811
    logs = {}
    for compiled in (False, True):
        config = stage_config(workspace, f"compile_{compiled}", steps=3, clip={"compile": compiled},
                              **{"checkpoint.every_steps": 3, "logging.tensorboard": False})
        run_train(config, tmp_path / str(compiled))
        logs[compiled] = read_log(tmp_path / str(compiled))
    eager, compiled = ([r["loss"] for r in logs[c]] for c in (False, True))
    assert len(eager) == 3 and eager == pytest.approx(compiled, rel=1e-4, abs=1e-5)
    assert json.dumps(logs[True][-1]["lr"]) == json.dumps(logs[False][-1]["lr"])
