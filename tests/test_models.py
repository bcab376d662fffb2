"""The towers and the dual encoder: shapes, sizes, RoPE math, attention, resizing, Matryoshka."""

import logging
import math

import pytest
import torch
import torch.nn.functional as F

from mmclip import create_model
from mmclip.models import attention as attention_module
from mmclip.models.attention import attention, resolve_backend, varlen_attention
from mmclip.models.rope import apply_rotary, text_rotary, vision_rotary

from .conftest import FULL, TINY


def random_text(batch=3, length=12, vocab=1000, pad=1, lengths=(12, 7, 3)):
    ids = torch.randint(3, vocab, (batch, length))
    mask = torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]
    return ids.masked_fill(~mask, pad), mask.long()


# --- shapes and sizes ---------------------------------------------------------------------------


def test_encoders_return_pooled_embeddings(tiny_model):
    pixels = torch.randn(2, 3, 56, 56)
    ids, mask = random_text()
    assert tiny_model.encode_image(pixels).shape == (2, 64)
    assert tiny_model.encode_text(ids, mask).shape == (3, 64)
    out = tiny_model(input_ids=ids, attention_mask=mask)
    assert out.image_embeds is None and out.text_embeds.shape == (3, 64)
    assert tiny_model.vision.forward_features(pixels).shape == (2, 1 + 16, 64)


def test_full_size_parameter_counts_match_the_paper():
    model = create_model(FULL, device="meta", overrides=["vision.image_size=512"])
    vision = sum(p.numel() for p in model.vision.parameters())
    text = sum(p.numel() for p in model.text.parameters())
    # Paper Table 1: 304M vision, 561M text (the released text count includes rank-4 LoRA factors).
    assert abs(vision / 304e6 - 1) < 0.01
    assert abs(text / 561e6 - 1) < 0.01
    assert model.vision.pos_embed.shape == (1, 1 + 36 * 36, 1024)
    assert all(p.is_meta for p in model.parameters())


def test_image_size_must_match_the_tower(tiny_model):
    with pytest.raises(ValueError, match="expected 56x56 images"):
        tiny_model.encode_image(torch.randn(1, 3, 64, 64))


# --- RoPE against direct formulas ---------------------------------------------------------------


def rotate_pairs(x, angles, pairs):
    """Reference rotation: each (i, j) pair of dims as a complex number times exp(i * angle)."""
    out = x.clone()
    for (i, j), angle in zip(pairs, angles):
        z = torch.complex(x[..., i], x[..., j]) * torch.polar(torch.ones_like(angle), angle)
        out[..., i], out[..., j] = z.real, z.imag
    return out


def test_text_rope_matches_complex_rotation():
    head_dim, base, position = 16, 10000.0, 7
    x = torch.randn(head_dim, dtype=torch.float64)
    cis = text_rotary(torch.tensor(position), head_dim, base)
    pairs = [(i, i + head_dim // 2) for i in range(head_dim // 2)]
    angles = [torch.tensor(position / base ** (2 * i / head_dim), dtype=torch.float64) for i in range(head_dim // 2)]
    expected = rotate_pairs(x, angles, pairs)
    assert torch.allclose(apply_rotary(x.float(), cis).double(), expected, atol=1e-5)
    # The attention layout: the same values with the head dims in pair order (i, i + d/2, ...).
    order = torch.arange(head_dim).view(2, -1).T.flatten()
    assert torch.allclose(apply_rotary(x.float(), cis, keep_layout=False).double(), expected[order], atol=1e-5)


def test_text_rope_scores_depend_only_on_relative_position():
    head_dim = 32
    q, k = torch.randn(head_dim), torch.randn(head_dim)

    def score(m, n):
        cq = text_rotary(torch.tensor(m), head_dim, 20000.0)
        ck = text_rotary(torch.tensor(n), head_dim, 20000.0)
        return (apply_rotary(q, cq) * apply_rotary(k, ck)).sum()

    assert torch.allclose(score(3, 1), score(103, 101), atol=1e-4)
    assert torch.allclose(score(0, 5), score(40, 45), atol=1e-4)
    assert not torch.allclose(score(3, 1), score(1, 3), atol=1e-3)


def test_vision_rope_is_the_interleaved_2d_grid():
    grid, head_dim, reference = 6, 16, 16
    cis = vision_rotary(grid, head_dim, reference)
    assert cis.shape == (grid * grid, head_dim // 2, 2) and cis.dtype == torch.float32
    x = torch.randn(grid * grid, head_dim, dtype=torch.float64)
    rotated = apply_rotary(x.float(), cis, interleaved=True).double()
    with_cls = vision_rotary(grid, head_dim, reference, prefix_tokens=1)
    assert torch.equal(with_cls[0], torch.tensor([1.0, 0.0]).expand(head_dim // 2, 2)) and torch.equal(with_cls[1:], cis)
    axis = head_dim // 2
    freqs = [1.0 / 10000 ** (2 * i / axis) for i in range(axis // 2)]
    for index in (0, 7, grid * grid - 1):
        row, col = divmod(index, grid)
        # First half rotates with the row, second with the column, positions on the 16-grid scale.
        angles = [row / grid * reference * f for f in freqs] + [col / grid * reference * f for f in freqs]
        pairs = [(2 * i, 2 * i + 1) for i in range(head_dim // 2)]
        expected = rotate_pairs(x[index], [torch.tensor(a, dtype=torch.float64) for a in angles], pairs)
        assert torch.allclose(rotated[index], expected, atol=1e-5)


# --- attention ----------------------------------------------------------------------------------


def naive_attention(q, k, v, key_padding_mask=None):
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    if key_padding_mask is not None:
        scores = scores.masked_fill(~key_padding_mask[:, None, None, :], float("-inf"))
    return torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v)


def test_sdpa_matches_the_softmax_formula_with_padding():
    q, k, v = (torch.randn(2, 9, 4, 8) for _ in range(3))
    mask = torch.arange(9)[None] < torch.tensor([[9], [5]])
    out = attention(q, k, v, backend="sdpa", key_padding_mask=mask)
    assert torch.allclose(out, naive_attention(q, k, v, mask), atol=1e-5)


def test_packed_attention_matches_padded():
    lengths = [5, 2, 7]
    q, k, v = (torch.randn(3, 7, 2, 8) for _ in range(3))
    mask = torch.arange(7)[None] < torch.tensor(lengths)[:, None]
    padded = attention(q, k, v, backend="sdpa", key_padding_mask=mask)[mask]
    cu_seqlens = F.pad(torch.tensor(lengths).cumsum(0, dtype=torch.int32), (1, 0))
    packed = varlen_attention(q[mask], k[mask], v[mask], cu_seqlens=cu_seqlens, max_seqlen=7, backend="sdpa")
    assert torch.allclose(packed, padded, atol=1e-5)


@pytest.mark.parametrize("requested", ["xformers", "flash"])
def test_unavailable_backend_is_reported_once_and_uses_sdpa(requested, caplog):
    attention_module._warn_once.cache_clear()
    with caplog.at_level(logging.WARNING, logger="mmclip.models.attention"):
        for _ in range(3):
            assert resolve_backend(requested, torch.device("cpu")) == "sdpa"
    warnings = [r for r in caplog.records if requested in r.getMessage()]
    assert len(warnings) == 1 and "using 'sdpa'" in warnings[0].getMessage()


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="attention backend"):
        resolve_backend("naive", torch.device("cpu"))


def test_backends_agree_on_the_towers(tiny_model):
    """Every backend name builds a model whose embeddings equal the sdpa model's on this device."""
    pixels = torch.randn(2, 3, 56, 56)
    ids, mask = random_text()
    reference = (tiny_model.encode_image(pixels), tiny_model.encode_text(ids, mask))
    for backend in ("auto", "xformers", "flash"):
        other = create_model(TINY, overrides=[f"attention_backend={backend}"]).eval()
        other.load_state_dict(tiny_model.state_dict())
        assert torch.allclose(other.encode_image(pixels), reference[0], atol=1e-5)
        assert torch.allclose(other.encode_text(ids, mask), reference[1], atol=1e-5)


# --- text tower ---------------------------------------------------------------------------------


def test_text_padding_does_not_change_embeddings(tiny_model):
    ids, mask = random_text()
    padded = tiny_model.encode_text(ids, mask)
    for row, length in enumerate((12, 7, 3)):
        alone = tiny_model.encode_text(ids[row : row + 1, :length])
        assert torch.allclose(alone[0], padded[row], atol=1e-5)


def test_packed_and_padded_text_paths_agree(tiny_model):
    ids, mask = random_text()
    packed = tiny_model.text(ids, mask, packed=True)
    padded = tiny_model.text(ids, mask, packed=False)
    assert torch.allclose(packed, padded, atol=1e-5)


def test_text_mask_defaults_to_non_pad_tokens(tiny_model):
    ids, mask = random_text()
    assert torch.allclose(tiny_model.encode_text(ids), tiny_model.encode_text(ids, mask), atol=1e-6)


# --- vision tower: patch dropout and resolution changes -----------------------------------------


def test_patch_dropout_keeps_rope_aligned(tiny_model):
    """Kept patches in any order give the same CLS output: positions travel with the patches."""
    pixels = torch.randn(2, 3, 56, 56)
    full = tiny_model.vision.forward_features(pixels)[:, 0]
    shuffled = torch.stack([torch.randperm(16) for _ in range(2)])
    permuted = tiny_model.vision.forward_features(pixels, keep_indices=shuffled)[:, 0]
    assert torch.allclose(permuted, full, atol=1e-5)
    subset = tiny_model.vision.forward_features(pixels, keep_indices=shuffled[:, :8])
    assert subset.shape == (2, 9, 64) and not torch.allclose(subset[:, 0], full, atol=1e-3)


def test_last_block_for_the_cls_token_alone_equals_the_whole_tower(tiny_model):
    """``forward`` runs the last block for the CLS token only; output and every gradient are the full tower's."""
    tiny_model.train()
    pixels = torch.randn(3, 3, 56, 56)
    keep = torch.stack([torch.randperm(16)[:12] for _ in range(3)])  # under patch dropout too
    direction = torch.randn(64, generator=torch.Generator().manual_seed(0))
    outputs, grads = [], []
    for cls_only in (False, True):
        tiny_model.zero_grad()
        states = tiny_model.vision.forward_features(pixels, keep_indices=keep, cls_only=cls_only)
        assert states.shape == ((3, 1, 64) if cls_only else (3, 13, 64))
        outputs.append(states[:, 0])
        (states[:, 0] @ direction).sum().backward()
        grads.append({n: p.grad.clone() for n, p in tiny_model.vision.named_parameters()})
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=2e-5)
    assert grads[1]["blocks.0.attn.qkv.weight"].abs().sum() > 0
    tiny_model.eval()
    torch.testing.assert_close(tiny_model.vision(pixels), tiny_model.vision.forward_features(pixels)[:, 0],
                               rtol=1e-5, atol=1e-5)


def test_patch_dropout_applies_only_in_training(tiny_model):
    tiny_model.vision.config.patch_dropout = 0.5
    pixels = torch.randn(2, 3, 56, 56)
    assert tiny_model.vision.forward_features(pixels).shape[1] == 17
    tiny_model.train()
    assert tiny_model.vision.forward_features(pixels).shape[1] == 1 + 8


def smooth_pos_embed(grid, width):
    """A pos_embed that varies smoothly over the grid, as trained ones do."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, grid), torch.linspace(0, 1, grid), indexing="ij")
    freqs = torch.linspace(0.5, 2.0, width // 2)
    table = torch.cat([torch.sin(ys.flatten()[:, None] * freqs), torch.cos(xs.flatten()[:, None] * freqs)], -1)
    return torch.cat([torch.zeros(1, width), table])[None]


def test_resize_round_trip_reproduces_outputs():
    torch.manual_seed(0)
    model = create_model(TINY, overrides=["vision.image_size=224"]).eval()
    model.vision.pos_embed.data = smooth_pos_embed(16, 64)
    pixels = torch.randn(2, 3, 224, 224)
    before = model.encode_image(pixels)
    model.vision.set_image_size(384)
    assert model.vision.pos_embed.shape == (1, 1 + 27 * 27, 64)
    model.vision.set_image_size(224)
    after = model.encode_image(pixels)
    assert F.cosine_similarity(before, after).min() > 0.999


@pytest.mark.parametrize("image_size, grid", [(384, 27), (512, 36)])
def test_tower_runs_at_later_stage_resolutions(tiny_model, image_size, grid):
    tiny_model.vision.set_image_size(image_size)
    assert tiny_model.vision.config.grid_size == grid
    tokens = tiny_model.vision.forward_features(torch.randn(1, 3, image_size, image_size))
    assert tokens.shape == (1, 1 + grid * grid, 64) and torch.isfinite(tokens).all()


# --- dual encoder -------------------------------------------------------------------------------


def test_matryoshka_truncation_accepts_only_configured_dims(tiny_model):
    ids, mask = random_text()
    full = tiny_model.encode_text(ids, mask)
    short = tiny_model.encode_text(ids, mask, truncate_dim=16, normalize=True)
    assert torch.allclose(short, F.normalize(full[:, :16], dim=-1))
    assert torch.allclose(short.norm(dim=-1), torch.ones(3))
    for bad in (8, 20, 65, 1024):
        with pytest.raises(ValueError, match="matryoshka_dims"):
            tiny_model.encode_text(ids, mask, truncate_dim=bad)


def test_one_learnable_temperature_per_task(tiny_model):
    scales = {n: p for n, p in tiny_model.named_parameters() if n.startswith("logit_scale")}
    assert set(scales) == {"logit_scale_image_text", "logit_scale_text_text"}
    assert all(p.requires_grad and p.ndim == 0 for p in scales.values())


def test_gradients_flow_with_activation_checkpointing(tiny_model):
    tiny_model.train()
    tiny_model.set_grad_checkpointing(True)
    ids, mask = random_text()
    # A random direction, not a plain sum: the sum of a LayerNorm's output (the CLS embedding, with
    # no projection) is constant, so its gradient is zero up to rounding.
    direction = torch.randn(tiny_model.config.embed_dim, generator=torch.Generator().manual_seed(0))
    loss = (tiny_model.encode_image(torch.randn(2, 3, 56, 56)) @ direction).sum()
    loss = loss + (tiny_model.encode_text(ids, mask) @ direction).sum()
    loss.backward()
    assert tiny_model.vision.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert tiny_model.text.layers[0].mixer.Wqkv.weight.grad.abs().sum() > 0


def test_temperatures_are_clamped_as_open_clip_does(tiny_model):
    with torch.no_grad():
        tiny_model.logit_scale_image_text.fill_(7.0)
        tiny_model.logit_scale_text_text.fill_(-1.0)
    tiny_model.clamp_logit_scales()
    assert tiny_model.logit_scale_image_text.item() == pytest.approx(math.log(100), abs=1e-4)
    assert tiny_model.logit_scale_text_text.item() == 0.0
