"""The recipe's stage configs (Table 6 of the jina-clip-v2 paper) and the CPU demo's, as loaded."""

import pytest

from mmclip.config import ConfigError, load_config
from mmclip.factory import load_model_config
from mmclip.train.config import TrainConfig
from mmclip.train.memory import estimate_memory

from .conftest import REPO

# Table 6: per stage, (image-text batch, text batch, steps, LR image/text, layer decay image/text,
# resolution, max sequence length); plus the text stream's kind and the caption shards.
TABLE_6 = {
    "stage1": (16384, 16384, 100_000, (2e-4, 1e-4), (1.0, 1.0), 224, 77, "text_pair"),
    "stage2": (8192, 8192, 6_000, (5e-5, 5e-5), (0.98, 0.98), 384, 512, "text_pair"),
    "stage3": (1024, 128, 16_000, (5e-6, 1e-4), (1.0, 1.0), 512, 512, "text_triplet"),
}
PATCH_DROPOUT = {"stage1": 0.5, "stage2": 0.3, "stage3": 0.1}  # jina-clip-v2.md 12.1


@pytest.mark.parametrize("stage", TABLE_6)
def test_stage_config_is_table_6(stage):
    config = load_config(TrainConfig, REPO / "configs" / f"{stage}.yaml")
    image_batch, text_batch, steps, lrs, decays, resolution, context, text_kind = TABLE_6[stage]
    text_stream = next(s for s in config.data.streams.values() if s.kind != "image_text")
    image_stream = next(s for s in config.data.streams.values() if s.kind == "image_text")
    assert len(config.data.streams) == 2
    assert (image_stream.batch_size, text_stream.batch_size, text_stream.kind) == (image_batch, text_batch, text_kind)
    assert config.steps == steps
    assert (config.optimizer.lr_vision, config.optimizer.lr_text) == lrs
    assert (config.optimizer.layer_decay_vision, config.optimizer.layer_decay_text) == decays
    assert config.clip.resolution_schedule[0].image_size == config.data.image_size == resolution
    assert config.data.context(text_stream_name(config)) == config.data.context("image_text") == context
    assert config.optimizer.betas == [0.9, 0.98] and config.optimizer.eps == 1e-6
    assert config.optimizer.weight_decay == 0.02 and config.optimizer.min_lr_ratio == 0.0
    assert config.precision == "bf16" and config.world_size == 8
    assert config.clip.patch_dropout == PATCH_DROPOUT[stage]
    assert config.model == str(REPO / "configs" / "model" / "jina-clip-v2.yaml")  # relative to the stage YAML
    assert load_model_config(REPO / config.model).embed_dim == 1024


def test_stage_configs_fit_8_x_80_gb():
    """Stages 1 and 2 need GradCache to fit (their whole per-rank batches do not); stage 3 fits whole."""
    for stage in TABLE_6:
        config = load_config(TrainConfig, REPO / "configs" / f"{stage}.yaml")
        model = load_model_config(REPO / config.model)
        assert estimate_memory(config, model, 8)["peak_gb"] < 0.75 * 80, stage  # headroom for the estimate's error
        whole = load_config(TrainConfig, REPO / "configs" / f"{stage}.yaml",
                            ["grad_cache_chunk={}", "gradient_checkpointing=true"])
        assert (estimate_memory(whole, model, 8)["peak_gb"] > 80) == (stage != "stage3"), stage
    assert load_config(TrainConfig, REPO / "configs" / "stage3.yaml").gradient_checkpointing


def test_one_gpu_stage1_reaches_the_global_batch_by_chunking_alone():
    one = load_config(TrainConfig, REPO / "configs" / "stage1_1gpu.yaml")
    eight = load_config(TrainConfig, REPO / "configs" / "stage1.yaml")
    assert one.world_size == 1 and one.grad_cache_chunk and one.deepspeed == eight.deepspeed == {}
    # Everything but the rank count and the chunks is stage 1's: global batches, steps, LR, schedule.
    for config in (one, eight):
        config.world_size, config.grad_cache_chunk = None, {}
    assert one == eight
    config = load_config(TrainConfig, REPO / "configs" / "stage1_1gpu.yaml")
    assert estimate_memory(config, load_model_config(REPO / config.model), 1)["peak_gb"] < 80


def text_stream_name(config):
    return next(name for name, s in config.data.streams.items() if s.kind != "image_text")


def test_stage_1_ends_at_384_px_and_the_stages_chain():
    stages = {s: load_config(TrainConfig, REPO / "configs" / f"{s}.yaml") for s in TABLE_6}
    schedule = stages["stage1"].clip.resolution_schedule
    assert [(p.step, p.image_size) for p in schedule] == [(0, 224), (90_000, 384)]  # the last 10%
    assert stages["stage1"].init_from is None
    assert stages["stage2"].init_from == f"runs/stage1/checkpoints/step_{stages['stage1'].steps:06d}"
    assert stages["stage3"].init_from == f"runs/stage2/checkpoints/step_{stages['stage2'].steps:06d}"
    shards = [s.data.streams["image_text"].shards for s in stages.values()]
    assert shards == [["data/mm_s"], ["data/mm_l"], ["data/mm_l"]]


@pytest.mark.parametrize("stage", TABLE_6)
def test_demo_config_has_the_recipe_structure(stage):
    """The demo scales sizes down but keeps each stage's kinds of data and LR ratios."""
    demo = load_config(TrainConfig, REPO / "configs" / "demo" / f"{stage}.yaml")
    recipe = load_config(TrainConfig, REPO / "configs" / f"{stage}.yaml")
    assert {s.kind for s in demo.data.streams.values()} == {s.kind for s in recipe.data.streams.values()}
    assert demo.precision == "fp32" and demo.world_size is None and demo.init_from is None  # the demo chains them
    first = load_config(TrainConfig, REPO / "configs" / "demo" / "stage1.yaml")
    assert load_model_config(REPO / demo.model).vision.image_size == first.data.image_size
    # The image LR relative to stage 1's, as in Table 6 (stage 2 a quarter, stage 3 a fortieth).
    ratio = demo.optimizer.lr_vision / first.optimizer.lr_vision
    recipe_first = load_config(TrainConfig, REPO / "configs" / "stage1.yaml")
    assert ratio == pytest.approx(recipe.optimizer.lr_vision / recipe_first.optimizer.lr_vision)


def test_demo_resolutions_rise_stage_by_stage_like_the_recipe():
    starts = [load_config(TrainConfig, REPO / "configs" / "demo" / f"{s}.yaml").data.image_size for s in TABLE_6]
    recipe = [load_config(TrainConfig, REPO / "configs" / f"{s}.yaml").data.image_size for s in TABLE_6]
    assert starts == sorted(set(starts)) and recipe == sorted(set(recipe))


def test_the_clip_familys_keys_live_in_its_block():
    with pytest.raises(ConfigError, match=r"stage1.yaml: resolution_schedule: moved to clip.resolution_schedule"):
        load_config(TrainConfig, REPO / "configs" / "stage1.yaml", ["resolution_schedule=[]"])
    with pytest.raises(ConfigError, match=r"patch_dropout: moved to clip.patch_dropout"):
        load_config(TrainConfig, REPO / "configs" / "stage1.yaml", ["patch_dropout=0.1"])
