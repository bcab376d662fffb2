"""Per-tower training of the dual encoder (``clip.towers``): for every mode, a few real training steps through
the DeepSpeed engine leave the frozen weights unchanged and the optimizer without state for them; locking
follows open_clip's last-N-blocks rule; LoRA checkpoints hold the adapters merged; the memory estimate
counts only what trains."""

import pytest
import torch

from mmclip.factory import load_model_config
from mmclip.models import MMCLIP
from mmclip.train import load_train_config
from mmclip.train.distributed import distributed_session, world_info
from mmclip.train.engine import build_engine
from mmclip.train.families.clip import CLIPFamily
from mmclip.train.memory import estimate_memory

from .conftest import TINY
from .test_train import stage_config, write_corpus

# With projections, so that frozen (projection frozen) and lock / lora (projection trains) differ.
MODEL_OVERRIDES = ["projections=true", "embed_dim=32", "matryoshka_dims=[16, 32]"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("towers")
    write_corpus(root)
    return root


def stage(root, towers, grad_cache=False):
    """test_train's stage on the tiny corpus: 3 steps, 8 images a batch, the given towers, plain AdamW (ZeRO-0)."""
    return stage_config(root, "towers", **{
        "model_overrides": [*MODEL_OVERRIDES, f"text.tokenizer={root / 'tokenizer'}"], "steps": 3,
        "data.streams.image_text.batch_size": 8, "optimizer": {"lr_vision": 1e-2, "lr_text": 1e-2, "warmup_steps": 1},
        "clip": {"towers": towers}, "grad_cache_chunk": {"image_text": 4} if grad_cache else {}, "zero_stage": 0,
    })


def train_steps(path):
    """The trainer's own parts for ``steps`` steps: the family's model and step, the engine and its AdamW.

    Returns the family, the trained module, its parameters before training and the optimizer."""
    config, model_config = load_train_config(path, [], 1)
    family = CLIPFamily(config, model_config)
    with distributed_session(world_info()) as device:
        model = family.build_model(config.data.image_size, None)
        before = {name: param.detach().clone() for name, param in model.named_parameters()}
        engine, optimizer = build_engine(config, family, model, device, 0)
        loader = family.make_loader(engine.module, config.data, config.data.image_size, 0, 1)

        def backward(loss, last):
            engine.set_gradient_accumulation_boundary(last)
            engine.backward(loss)

        for _, batches in zip(range(config.steps), loader):
            family.step(engine, batches, torch.float32, device, backward)
            engine.step()
    return family, engine.module, before, optimizer


MODES = {
    "vision-frozen": ({"vision": {"mode": "frozen"}}, True),  # GradCache embeds its images once
    "lock-1-each": ({"vision": {"mode": "lock", "unlocked_layers": 1}, "text": {"mode": "lock", "unlocked_layers": 1}},
                    True),
    "text-lora": ({"vision": {"mode": "lock"}, "text": {"mode": "lora"}, "lora": {"r": 4, "alpha": 8, "dropout": 0.0}},
                  True),
    "both-lora-text-frozen": ({"vision": {"mode": "lora"}, "text": {"mode": "frozen"}}, False),
}


@pytest.mark.parametrize("mode", MODES, ids=list(MODES))
def test_frozen_weights_stay_and_have_no_optimizer_state(corpus, mode):
    towers, grad_cache = MODES[mode]
    family, module, before, optimizer = train_steps(stage(corpus, towers, grad_cache))
    params = dict(module.named_parameters())
    frozen = {name for name, param in params.items() if not param.requires_grad}
    trained = set(params) - frozen
    assert frozen and trained

    in_groups = {id(p) for group in optimizer.param_groups for p in group["params"]}
    with_state = {id(p) for p in optimizer.state}
    for name in frozen:
        assert torch.equal(params[name], before[name]), f"{name} is frozen but changed"
        assert id(params[name]) not in in_groups | with_state, f"{name} is frozen but the optimizer holds it"
    assert in_groups == with_state == {id(params[name]) for name in trained}  # every trained weight, stepped
    assert any(not torch.equal(params[name], before[name]) for name in trained if "lora_A" not in name)

    vision, text = towers.get("vision", {}).get("mode", "full"), towers.get("text", {}).get("mode", "full")
    for tower, setting in (("vision", vision), ("text", text)):
        projection = f"{tower}_proj.weight"
        assert (projection in trained) == (setting != "frozen")
        lora = [name for name in params if name.startswith(f"{tower}.") and ".lora_" in name]
        assert bool(lora) == (setting == "lora") and set(lora) <= trained
    if mode == "lock-1-each":  # the last block (and, for vision, the final norm after it) and nothing before
        vision_modules = {".".join(n.split(".")[:2]) for n in trained if n.startswith("vision.")}
        assert vision_modules == {"vision.blocks", "vision.norm"}
        assert all(n.startswith(("vision.blocks.1.", "vision.norm.", "text.layers.1.", "vision_proj", "text_proj",
                                 "logit_scale")) for n in trained)


def test_lora_checkpoints_hold_plain_merged_weights(corpus):
    family, module, _, _ = train_steps(stage(corpus, MODES["text-lora"][0]))
    with torch.no_grad():  # make the adapters matter (peft starts B at zero; three steps move it little)
        for name, param in module.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)
    weights = family.checkpoint_weights(module, {k: v.detach().clone() for k, v in module.state_dict().items()})
    plain = MMCLIP(load_model_config(TINY, MODEL_OVERRIDES)).eval()
    plain.load_state_dict(weights)  # strict: no adapter or base_layer key is left
    module.eval()
    ids = torch.randint(5, 300, (3, 10))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        torch.testing.assert_close(plain.encode_text(ids, mask), module.encode_text(ids, mask), atol=1e-5, rtol=0)


def test_memory_estimate_counts_only_what_trains(corpus):
    def estimate(towers):
        config, model = load_train_config(stage(corpus, towers), [], 1)
        return estimate_memory(config, model, 1)["phases"][0]

    full, frozen_vision = estimate({}), estimate({"vision": {"mode": "frozen"}})
    vision_params = sum(p.numel() for n, p in MMCLIP(load_model_config(TINY, MODEL_OVERRIDES)).named_parameters()
                        if n.startswith(("vision.", "vision_proj.")))
    assert full["trainable_parameters"] - frozen_vision["trainable_parameters"] == vision_params
    assert frozen_vision["gb"]["optimizer"] < full["gb"]["optimizer"]
    assert frozen_vision["gb"]["weights"] == full["gb"]["weights"]  # frozen weights are still held
    assert frozen_vision["gb"]["activations"] < full["gb"]["activations"]
    lora = estimate({"text": {"mode": "lora"}})
    assert full["parameters"] == full["trainable_parameters"]
    assert lora["parameters"] > full["parameters"] and lora["trainable_parameters"] < full["trainable_parameters"]
