"""mmclip.weights: every checkpoint layout, saved by its own library or with its exact key names, loads
into our towers and gives the same outputs; broken checkpoints raise before anything is copied."""

import json

import open_clip
import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models import register_model
from timm.models.eva import _create_eva
from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM, XLMRobertaModel

from mmclip.models import MMCLIP, CLIPConfig, EvaVisionTower, TextConfig, VisionConfig, XLMRobertaTextTower
from mmclip.weights import (
    WeightLoadingError,
    load_clip_weights,
    load_text_weights,
    load_vision_weights,
    read_state_dict,
)

VOCAB = 100
ATOL = 1e-5


def vision_config(**overrides):
    # timm's EVA02-CLIP at toy size: mlp hidden int(64 * 4 * 2/3), RoPE on the 16x16 reference grid.
    fields = dict(
        image_size=56, patch_size=14, width=64, depth=2, num_heads=4, mlp_hidden_dim=170, rope_reference_grid=16
    )
    return VisionConfig(**(fields | overrides))


def text_config(**overrides):
    fields = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        depth=2,
        num_heads=4,
        intermediate_size=128,
        max_position_embeddings=40,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )
    return TextConfig(**(fields | overrides))


@torch.no_grad()
def perturb_(module):
    """Random offsets on every parameter, so zero biases and unit LayerNorm weights matter too."""
    for param in module.parameters():
        param.add_(0.1 * torch.randn_like(param))
    return module


def images():
    return torch.randn(2, 3, 56, 56)


def texts():
    """A right-padded batch (pad id 1) and its attention mask."""
    ids = torch.randint(3, VOCAB, (3, 12))
    mask = torch.arange(12)[None, :] < torch.tensor([12, 7, 3])[:, None]
    return ids.masked_fill(~mask, 1), mask.long()


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


# --- vision: timm and open_clip, saved by the libraries themselves -------------------------------


@register_model
def eva02_tiny_test_patch14_clip_56(pretrained=False, **kwargs):
    """eva02_large_patch14_clip_224's architecture at toy size, for an open_clip model config."""
    args = dict(
        img_size=56,
        patch_size=14,
        embed_dim=64,
        depth=2,
        num_heads=4,
        mlp_ratio=4 * 2 / 3,
        qkv_fused=False,
        swiglu_mlp=True,
        scale_mlp=True,
        scale_attn_inner=True,
        use_rot_pos_emb=True,
        ref_feat_shape=(16, 16),
        global_pool=kwargs.pop("global_pool", "token"),
    )
    return _create_eva("eva02_tiny_test_patch14_clip_56", pretrained=pretrained, **(args | kwargs))


def timm_checkpoint(directory):
    """A tiny timm EVA02-CLIP (with its classifier head) saved as safetensors; returns (path, model)."""
    model = timm.create_model(
        "eva02_large_patch14_clip_224", pretrained=False, img_size=56, embed_dim=64, depth=2, num_heads=4
    )
    model = perturb_(model).eval()
    path = directory / "model.safetensors"
    save_file(model.state_dict(), path)
    return path, model


def open_clip_checkpoint(directory, ddp=False):
    """A tiny timm-EVA02 open_clip model, saved as open_clip's training loop does; returns (path, trunk)."""
    config = {
        "embed_dim": 32,
        "vision_cfg": {
            "image_size": 56,
            "timm_model_name": "eva02_tiny_test_patch14_clip_56",
            "timm_model_pretrained": False,
            "timm_pool": "token",
            "timm_proj": None,
        },
        "text_cfg": {"context_length": 8, "vocab_size": VOCAB, "width": 32, "heads": 2, "layers": 1},
        "custom_text": True,
    }
    (directory / "EVA02-tiny-test.json").write_text(json.dumps(config))
    open_clip.add_model_config(directory)
    model = perturb_(open_clip.create_model("EVA02-tiny-test")).eval()
    state_dict = model.state_dict()
    if ddp:  # open_clip saves the DistributedDataParallel wrapper's state dict
        state_dict = {f"module.{key}": value for key, value in state_dict.items()}
    path = directory / "epoch_1.pt"
    torch.save({"epoch": 1, "name": "EVA02-tiny-test", "state_dict": state_dict}, path)
    return path, model.visual.trunk


@pytest.mark.parametrize(
    "make, layout",
    [
        (timm_checkpoint, "timm"),
        (open_clip_checkpoint, "open_clip"),
        (lambda directory: open_clip_checkpoint(directory, ddp=True), "open_clip"),
    ],
    ids=["timm", "open_clip", "open_clip-ddp"],
)
def test_timm_towers_match_the_reference(tmp_path, make, layout):
    path, reference = make(tmp_path)
    tower = EvaVisionTower(vision_config()).eval()
    assert load_vision_weights(tower, path) == layout
    x = images()
    with torch.no_grad():
        expected = reference.forward_head(reference.forward_features(x), pre_logits=True)
        torch.testing.assert_close(tower(x), expected, atol=ATOL, rtol=ATOL)


# --- text: HF XLM-RoBERTa, saved by transformers --------------------------------------------------


def hf_config():
    # xlm-roberta-large's eps; transformers' default (1e-12) is BERT's.
    return XLMRobertaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=40,
        type_vocab_size=1,
        pad_token_id=1,
        layer_norm_eps=1e-5,
    )


@pytest.mark.parametrize(
    "model_class, shard_size",
    [(XLMRobertaModel, None), (XLMRobertaModel, "20KB"), (XLMRobertaForMaskedLM, None)],
    ids=["model", "sharded", "masked_lm"],
)
def test_hf_xlm_roberta_matches_transformers(tmp_path, model_class, shard_size):
    hf_model = perturb_(model_class(hf_config())).eval()
    hf_model.save_pretrained(tmp_path, **({"max_shard_size": shard_size} if shard_size else {}))
    assert (tmp_path / "model.safetensors.index.json").exists() == bool(shard_size)

    tower = XLMRobertaTextTower(text_config(position_embedding="absolute")).eval()
    assert load_text_weights(tower, tmp_path) == "hf_xlm_roberta"
    ids, mask = texts()
    with torch.no_grad():
        encoder = hf_model if model_class is XLMRobertaModel else hf_model.roberta
        hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        expected = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        torch.testing.assert_close(tower(ids, mask), expected, atol=ATOL, rtol=ATOL)


# --- Jina layouts, written with the released key names (jina-clip-v2.md section 8) ----------------


def eva_clip_keys(vision_state):
    """Our vision names to EVA-CLIP's: split q/k/v projections (biases stay q_bias / v_bias) and w1 / w2."""
    out = {}
    for key, value in vision_state.items():
        if key.endswith(".attn.qkv.weight"):
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3)):
                out[key.replace("qkv", name)] = part.clone()
        elif ".mlp.w12." in key:
            for name, part in zip(("w1", "w2"), value.chunk(2)):
                out[key.replace("w12", name)] = part.clone()
        else:
            out[key] = value.clone()
    return out


def jina_flash_keys(text_state, scaling, num_adapters=1, adapter=0, rank=4):
    """Our text names to Jina's flash layout, every Linear / Embedding weight parametrized with LoRA.

    The factors are random for every adapter; ``original`` is chosen so that merging ``adapter``
    with ``scaling`` gives back our weight.
    """
    out = {}
    for key, value in text_state.items():
        if key.startswith("layers."):
            key = "encoder." + key
        if value.ndim != 2:  # biases and LayerNorms carry no parametrization
            out[key] = value.clone()
            continue
        module = key.removesuffix(".weight")
        rows, cols = value.shape
        if module.endswith("_embeddings"):  # Embedding: A [n, num, r], B [n, r, dim]
            lora_a, lora_b = 0.1 * torch.randn(num_adapters, rows, rank), 0.1 * torch.randn(num_adapters, rank, cols)
            delta = lora_a[adapter] @ lora_b[adapter]
        else:  # Linear: A [n, r, in], B [n, out, r]
            lora_a, lora_b = 0.1 * torch.randn(num_adapters, rank, cols), 0.1 * torch.randn(num_adapters, rows, rank)
            delta = lora_b[adapter] @ lora_a[adapter]
        out[f"{module}.parametrizations.weight.original"] = value - scaling * delta
        out[f"{module}.parametrizations.weight.0.lora_A"] = lora_a
        out[f"{module}.parametrizations.weight.0.lora_B"] = lora_b
    return out


def prefixed(prefix, state_dict):
    return {prefix + key: value for key, value in state_dict.items()}


V3_ADAPTERS = ["retrieval.query", "retrieval.passage"]


def jina_xlm_roberta_dir(directory, reference, adapter="retrieval.passage", **config):
    """jina-embeddings-v3 style: XLMRobertaLoRA (``roberta.``) weights, LoRA fields at the top of config.json."""
    config = {"lora_adaptations": V3_ADAPTERS, "lora_rank": 4, "lora_alpha": 8, "rotary_emb_base": 10000.0} | config
    state = jina_flash_keys(reference.state_dict(), scaling=2.0, num_adapters=2, adapter=V3_ADAPTERS.index(adapter))
    save_file(prefixed("roberta.", state), directory / "model.safetensors")
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_jina_xlm_roberta_merges_the_chosen_adapter(tmp_path):
    reference = perturb_(XLMRobertaTextTower(text_config())).eval()
    path = jina_xlm_roberta_dir(tmp_path, reference)
    tower = XLMRobertaTextTower(text_config()).eval()
    assert load_text_weights(tower, path, lora_adapter="retrieval.passage") == "jina_xlm_roberta"
    for name, param in reference.state_dict().items():
        torch.testing.assert_close(tower.state_dict()[name], param, atol=1e-6, rtol=0, msg=name)
    ids, mask = texts()
    with torch.no_grad():
        torch.testing.assert_close(tower(ids, mask), reference(ids, mask), atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize(
    "adapter, config, match",
    [
        (None, {}, "2 LoRA adapters"),
        ("classification", {}, "no LoRA adapter 'classification'"),
        ("retrieval.passage", {"rotary_emb_base": 20000.0}, "rotary_emb_base=20000.0 but text.rotary_base is 10000.0"),
    ],
    ids=["ambiguous", "unknown", "rotary-base"],
)
def test_jina_xlm_roberta_config_errors(tmp_path, adapter, config, match):
    path = jina_xlm_roberta_dir(tmp_path, XLMRobertaTextTower(text_config()), **config)
    with pytest.raises(WeightLoadingError, match=match):
        load_text_weights(XLMRobertaTextTower(text_config()), path, lora_adapter=adapter)


def tiny_clip():
    config = CLIPConfig(
        embed_dim=64, matryoshka_dims=[32, 64], attention_backend="sdpa", vision=vision_config(), text=text_config()
    )
    return MMCLIP(config).eval()


def jina_clip_v2_dir(directory, reference):
    """The released jina-clip-v2 layout: config.json plus model.safetensors, one LoRA adapter (alpha 8 / rank 4)."""
    config = {
        "architectures": ["JinaCLIPModel"],
        "add_projections": False,
        "text_config": {
            "embed_dim": 64,
            "default_lora_task": "retrieval.query",
            "hf_model_config_kwargs": {"lora_adaptations": ["retrieval.query"], "lora_rank": 4, "lora_alpha": 8},
        },
        "vision_config": {
            "width": 64,
            "layers": 2,
            "head_width": 16,
            "patch_size": 14,
            "image_size": 56,
            "pt_hw_seq_len": 16,
        },
    }
    state = prefixed("vision_model.", eva_clip_keys(reference.vision.state_dict()))
    state |= prefixed("text_model.transformer.roberta.", jina_flash_keys(reference.text.state_dict(), scaling=2.0))
    state["logit_scale"] = reference.logit_scale_image_text.detach().clone()
    save_file(state, directory / "model.safetensors")
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def jina_open_clip_file(directory, reference):
    """Jina's open_clip fork: EVA-CLIP ``visual.`` (with its RoPE buffers), jina-embeddings-v3 as ``text.transformer``.

    No config.json travels with a training checkpoint, so the LoRA scaling is 1.
    """
    grid = reference.config.vision.grid_size
    rope = {"visual.rope.freqs_cos": torch.ones(grid * grid, 16), "visual.rope.freqs_sin": torch.zeros(grid * grid, 16)}
    state = prefixed("visual.", eva_clip_keys(reference.vision.state_dict())) | rope
    state |= prefixed("text.transformer.roberta.", jina_flash_keys(reference.text.state_dict(), scaling=1.0))
    state["logit_scale"] = reference.logit_scale_image_text.detach().clone()
    path = directory / "epoch_1.pt"
    torch.save({"epoch": 1, "name": "jina-clip-xlmBERT-large-EVA02-L14", "state_dict": state}, path)
    return path


@pytest.mark.parametrize(
    "make, layouts",
    [
        (jina_clip_v2_dir, ("jina_clip_v2", "jina_clip_v2", "jina_clip_v2")),
        (jina_open_clip_file, ("open_clip", "eva_clip", "jina_xlm_roberta")),
    ],
    ids=["jina_clip_v2", "jina_open_clip"],
)
def test_dual_encoder_checkpoints(tmp_path, make, layouts):
    reference = perturb_(tiny_clip())
    path = make(tmp_path, reference)
    model = tiny_clip()
    text_text_scale = model.logit_scale_text_text.detach().clone()
    assert load_clip_weights(model, path) == layouts[0]

    pixels, (ids, mask) = images(), texts()
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(pixels), reference.encode_image(pixels), atol=ATOL, rtol=ATOL)
        torch.testing.assert_close(model.encode_text(ids, mask), reference.encode_text(ids, mask), atol=ATOL, rtol=ATOL)
    assert model.logit_scale_image_text.item() == reference.logit_scale_image_text.item()
    assert torch.equal(model.logit_scale_text_text, text_text_scale)  # the checkpoint has no text-text temperature

    # One tower at a time from the same checkpoint: the other tower's keys are left alone.
    vision, text = EvaVisionTower(vision_config()).eval(), XLMRobertaTextTower(text_config()).eval()
    assert (load_vision_weights(vision, path), load_text_weights(text, path)) == layouts[1:]
    with torch.no_grad():
        torch.testing.assert_close(vision(pixels), reference.vision(pixels), atol=ATOL, rtol=ATOL)
        torch.testing.assert_close(text(ids, mask), reference.text(ids, mask), atol=ATOL, rtol=ATOL)


# --- failure modes --------------------------------------------------------------------------------


def edited_timm_checkpoint(directory, edit):
    path, _ = timm_checkpoint(directory)
    state_dict = read_state_dict(path)
    edit(state_dict)
    save_file(state_dict, path)
    return path


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda sd: sd.pop("blocks.1.attn.proj.bias"), r"missing \(1\): blocks\.1\.attn\.proj\.bias"),
        (
            lambda sd: sd.update({"blocks.0.attn.gate.weight": torch.zeros(64, 64)}),
            r"unexpected \(1\): blocks\.0\.attn\.gate\.weight",
        ),
        (
            lambda sd: sd.update({"patch_embed.proj.weight": torch.zeros(64, 3, 16, 16)}),
            r"patch_embed\.proj\.weight: checkpoint \[64, 3, 16, 16\] vs model \[64, 3, 14, 14\]",
        ),
    ],
    ids=["missing", "unexpected", "patch-size"],
)
def test_broken_checkpoints_raise_and_load_nothing(tmp_path, edit, message):
    path = edited_timm_checkpoint(tmp_path, edit)
    tower = EvaVisionTower(vision_config())
    before = {name: value.clone() for name, value in tower.state_dict().items()}
    with pytest.raises(WeightLoadingError, match=message) as error:
        load_vision_weights(tower, path)
    assert str(path) in str(error.value) and "timm" in str(error.value)
    assert all(torch.equal(value, before[name]) for name, value in tower.state_dict().items())


def test_position_embedding_mode_must_match(tmp_path):
    XLMRobertaModel(hf_config()).save_pretrained(tmp_path)
    with pytest.raises(WeightLoadingError, match="has absolute positions, text.position_embedding is 'rotary'"):
        load_text_weights(XLMRobertaTextTower(text_config()), tmp_path)
    tower = XLMRobertaTextTower(text_config(position_embedding="absolute", max_position_embeddings=514))
    with pytest.raises(WeightLoadingError, match="40 position embeddings, text.max_position_embeddings is 514"):
        load_text_weights(tower, tmp_path)


def test_unknown_layout_names_the_probes(tmp_path):
    save_file({"conv1.weight": torch.zeros(8, 3, 3, 3)}, tmp_path / "model.safetensors")
    message = r"no known vision layout.*blocks\.0\.mlp\.fc1_g\.weight.*conv1\.weight"
    with pytest.raises(WeightLoadingError, match=message):
        load_vision_weights(EvaVisionTower(vision_config()), tmp_path)


def test_pos_embed_is_resampled_to_the_tower_grid(tmp_path):
    path, _ = timm_checkpoint(tmp_path)
    tower = EvaVisionTower(vision_config(image_size=84)).eval()
    load_vision_weights(tower, path)
    assert tower.pos_embed.shape == (1, 1 + 6 * 6, 64)
    assert tower(torch.randn(1, 3, 84, 84)).shape == (1, 64)

    # Loading at 56 px and then resizing gives the same table.
    resized = EvaVisionTower(vision_config())
    load_vision_weights(resized, path)
    resized.set_image_size(84)
    assert torch.equal(tower.pos_embed, resized.pos_embed)


def test_weights_take_the_tower_dtype(tmp_path):
    path, _ = timm_checkpoint(tmp_path)
    fp32, bf16 = EvaVisionTower(vision_config()), EvaVisionTower(vision_config()).to(torch.bfloat16)
    load_vision_weights(fp32, path)
    load_vision_weights(bf16, path)
    for name, param in bf16.named_parameters():
        assert param.dtype == torch.bfloat16
        assert torch.equal(param, fp32.get_parameter(name).to(torch.bfloat16)), name


def test_create_model_loads_the_towers_its_config_names(tmp_path):
    """The user's path: a model YAML naming outside checkpoints for each tower."""
    from mmclip import create_model

    vision_path, timm_model = timm_checkpoint(tmp_path)
    hf_model = perturb_(XLMRobertaModel(hf_config())).eval()
    hf_model.save_pretrained(tmp_path / "xlm-r")
    config = tmp_path / "model.yaml"
    config.write_text(
        json.dumps(
            {
                "embed_dim": 64,
                "matryoshka_dims": [32, 64],
                "vision": vars(vision_config()) | {"pretrained": str(vision_path)},
                "text": vars(text_config(position_embedding="absolute")) | {"pretrained": str(tmp_path / "xlm-r")},
            }
        )
    )
    model = create_model(config).eval()
    x, (ids, mask) = images(), texts()
    with torch.no_grad():
        expected_image = timm_model.forward_head(timm_model.forward_features(x), pre_logits=True)
        hidden = hf_model(input_ids=ids, attention_mask=mask).last_hidden_state
        expected_text = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        torch.testing.assert_close(model.encode_image(x), expected_image, atol=ATOL, rtol=ATOL)
        torch.testing.assert_close(model.encode_text(ids, mask), expected_text, atol=ATOL, rtol=ATOL)


# --- training checkpoints and whole open_clip models, written by the libraries themselves ---------


def test_timm_checkpoint_saver_file_loads_its_ema_weights(tmp_path):
    """timm's train.py saves CheckpointSaver files (``state_dict``, ``state_dict_ema``, ``args`` as an
    argparse.Namespace); timm's load_checkpoint reads them, preferring the EMA weights: so do we."""
    import argparse

    from timm.models import load_checkpoint
    from timm.utils import CheckpointSaver, ModelEmaV3

    def tiny_eva():
        return timm.create_model(
            "eva02_large_patch14_clip_224", pretrained=False, img_size=56, embed_dim=64, depth=2, num_heads=4
        ).eval()

    model = perturb_(tiny_eva())
    ema = ModelEmaV3(model, decay=0.5)
    perturb_(model)  # the live weights move on; the EMA is halfway between
    ema.update(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    args = argparse.Namespace(model="eva02_large_patch14_clip_224", lr=0.1, epochs=1)
    saver = CheckpointSaver(model, optimizer, args=args, model_ema=ema, checkpoint_dir=str(tmp_path),
                            recovery_dir=str(tmp_path))
    saver.save_checkpoint(epoch=0, metric=0.5)
    path = tmp_path / "last.pth.tar"

    reference = tiny_eva()
    load_checkpoint(reference, str(path))  # timm's own loader (use_ema=True by default)
    tower = EvaVisionTower(vision_config()).eval()
    assert load_vision_weights(tower, path) == "timm"
    x = images()
    with torch.no_grad():
        expected = reference.forward_head(reference.forward_features(x), pre_logits=True)
        live = model.forward_head(model.forward_features(x), pre_logits=True)
        torch.testing.assert_close(tower(x), expected, atol=ATOL, rtol=ATOL)
        assert (tower(x) - live).abs().max() > 0.01  # the EMA, not the live weights


def xlm_roberta_dir(directory):
    """A tiny HF XLM-R (absolute positions) saved by transformers, for open_clip's HFTextEncoder."""
    model = perturb_(XLMRobertaModel(hf_config(), add_pooling_layer=False)).eval()
    model.save_pretrained(directory)
    return directory


def open_clip_xlm_r_model(directory, vision_proj=None, embed_dim=32):
    """A whole open_clip CLIP as open_clip builds it: timm EVA02 trunk, HF XLM-R text with a linear projection.

    ``vision_proj`` None: the trunk's classifier head is the projection (with a bias: EVA02-L-14's
    open_clip config); ``"linear"``: open_clip's ``head.proj`` (no bias)."""
    config = {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": 56, "timm_model_name": "eva02_tiny_test_patch14_clip_56",
                       "timm_model_pretrained": False, "timm_pool": "token", "timm_proj": vision_proj},
        "text_cfg": {"hf_model_name": str(xlm_roberta_dir(directory / "xlm-r")), "hf_model_pretrained": False,
                     "hf_proj_type": "linear", "hf_pooler_type": "mean_pooler", "hf_tokenizer_name": None},
    }
    name = f"EVA02-tiny-xlmr-{vision_proj}-{embed_dim}"
    (directory / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(directory)
    return perturb_(open_clip.create_model(name)).eval()


def save_open_clip(model, path):
    """open_clip's training loop: ``{"epoch", "name", "state_dict"}`` of the (DDP-wrapped) model."""
    state_dict = {f"module.{key}": value for key, value in model.state_dict().items()}
    torch.save({"epoch": 1, "name": "EVA02-tiny-xlmr", "state_dict": state_dict}, path)
    return path


def open_clip_clip_config(vision_proj_bias, embed_dim=32):
    return CLIPConfig(embed_dim=embed_dim, matryoshka_dims=[embed_dim], projections=True,
                      vision_proj_bias=vision_proj_bias, attention_backend="sdpa", vision=vision_config(),
                      text=text_config(position_embedding="absolute", hidden_dropout=0.0))


@pytest.mark.parametrize("vision_proj", [None, "linear"], ids=["trunk-head", "head-proj"])
def test_open_clip_whole_checkpoint_keeps_its_projections(tmp_path, vision_proj):
    reference = open_clip_xlm_r_model(tmp_path, vision_proj)
    path = save_open_clip(reference, tmp_path / "epoch_1.pt")
    model = MMCLIP(open_clip_clip_config(vision_proj_bias=vision_proj is None)).eval()
    assert load_clip_weights(model, path) == "open_clip"
    pixels, (ids, mask) = images(), texts()
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(pixels), reference.encode_image(pixels), atol=ATOL, rtol=ATOL)
        torch.testing.assert_close(model.encode_text(ids, mask), reference.encode_text(ids), atol=ATOL, rtol=ATOL)
    assert model.logit_scale_image_text.item() == reference.logit_scale.item()


def test_a_projection_the_model_cannot_hold_is_refused(tmp_path):
    """No projections configured (64-d towers, 64-d embeddings): open_clip's trunk head is not dropped quietly."""
    path = save_open_clip(open_clip_xlm_r_model(tmp_path, embed_dim=64), tmp_path / "epoch_1.pt")
    config = CLIPConfig(embed_dim=64, matryoshka_dims=[64], attention_backend="sdpa", vision=vision_config(),
                        text=text_config(position_embedding="absolute"))
    with pytest.raises(WeightLoadingError, match=r"unexpected \(3\): text_proj\.weight, vision_proj\.bias, "
                                                 r"vision_proj\.weight"):
        load_clip_weights(MMCLIP(config), path)
    with pytest.raises(WeightLoadingError, match=r"missing \(1\): vision_proj\.bias"):  # a bias it lacks
        load_clip_weights(MMCLIP(open_clip_clip_config(vision_proj_bias=True)), save_open_clip(
            open_clip_xlm_r_model(tmp_path, "linear"), tmp_path / "epoch_2.pt"))


@pytest.mark.parametrize("grid", [3, 6], ids=["down", "up"])
def test_pos_embed_resampling_matches_timm(grid):
    from timm.layers import resample_abs_pos_embed

    from mmclip.models.eva import resample_pos_embed

    pos_embed = torch.randn(1, 1 + 4 * 4, 64)
    torch.testing.assert_close(resample_pos_embed(pos_embed, grid), resample_abs_pos_embed(pos_embed, [grid, grid]),
                               atol=0, rtol=0)


def test_jina_clip_v2_task_metadata_stays_with_the_model(tmp_path):
    from mmclip import create_model

    reference = perturb_(tiny_clip())
    path = jina_clip_v2_dir(tmp_path, reference)
    config = json.loads((path / "config.json").read_text())
    instructions = {"retrieval.query": "Represent the query for retrieving evidence documents: "}
    config["text_config"]["hf_model_config_kwargs"]["task_instructions"] = instructions
    (path / "config.json").write_text(json.dumps(config))
    model = create_model(tiny_clip().config, overrides=[f"pretrained={path}"])
    assert model.config.task_instructions == instructions
    assert model.config.text.lora_adapter == "retrieval.query"  # the adapter merged on load
