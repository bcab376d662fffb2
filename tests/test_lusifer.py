"""LUSIFER: bidirectional / causal attention per backend, batch-padding invariance, the LM loss against
transformers' own, LoRA merging, both stages through `mmclip train` with exact resume, the export
round trip, config errors, and the plain-text / MS MARCO data paths."""

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer, MistralForCausalLM

from mmclip import ConfigError
from mmclip import checkpoint as model_checkpoint
from mmclip.cli import main as cli_main
from mmclip.data import MultiStreamLoader
from mmclip.data.config import DataConfig
from mmclip.data.formats import Text, TextPair, decode, encode
from mmclip.data.shards import ShardSetWriter
from mmclip.export import export
from mmclip.factory import create_lusifer_model
from mmclip.models import LusiferModel
from data_pipelines.synthetic.tiny_llm import write_tiny_mistral
from data_pipelines.synthetic.tokenizer import train_tokenizer
from mmclip.tokenizer import load_tokenizer
from mmclip.train import load_train_config
from mmclip.train.config import LoraSettings
from mmclip.train.families.lusifer import add_lora, merge_lora

from .conftest import REPO
from .test_data_pipelines import read_records, run_build
from .test_loader import SENTENCES, caption, write_triplets

TINY_LUSIFER = REPO / "configs" / "model" / "lusifer-tiny.yaml"
BACKENDS = ("sdpa", "eager")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Tokenizers, a tiny pretrained Mistral, and text / text_pair / text_triplet shards."""
    root = tmp_path_factory.mktemp("lusifer")
    texts = [caption(i) for i in range(200)] + SENTENCES
    train_tokenizer(texts * 3, vocab_size=300, output_dir=root / "tokenizer")
    write_tiny_mistral(root / "mistral", texts, vocab_size=400, pretrain_steps=30, batch_size=16)
    with ShardSetWriter(root / "text", "text", max_samples=8) as writer:
        for i in range(48):
            writer.write(Text(f"text{i:04d}", f"{caption(i)} and {caption(i + 7)}"))
    with ShardSetWriter(root / "text_pair", "text_pair", max_samples=8) as writer:
        for i in range(48):
            writer.write(TextPair(f"pair{i:04d}", caption(i), caption(i + 1)))
    write_triplets(root / "text_triplet", 32, max_samples=8)
    return root


def model_overrides(root):
    vocab = len(load_tokenizer(root / "tokenizer"))
    return [f"encoder.tokenizer={root / 'tokenizer'}", f"encoder.vocab_size={vocab}",
            f"llm_pretrained={root / 'mistral'}", f"llm_tokenizer={root / 'mistral'}"]


def tiny_model(root, backend="sdpa"):
    torch.manual_seed(0)
    return create_lusifer_model(TINY_LUSIFER, [*model_overrides(root), f"attn_implementation={backend}"]).eval()


@pytest.mark.parametrize("backend", BACKENDS)
def test_bidirectional_in_embedding_mode_causal_in_lm_mode(workspace, backend):
    model = tiny_model(workspace, backend)
    ids = torch.randint(5, model.config.encoder.vocab_size - 1, (2, 9))
    inputs, mask = model.prefix(ids, torch.ones_like(ids))
    later = inputs.clone()
    later[:, 6] += 0.5  # only a later position's input changes
    with torch.no_grad():
        embedding = [model.run_llm(x, mask, causal=False) for x in (inputs, later)]
        lm = [model.run_llm(x, mask, causal=True) for x in (inputs, later)]
    assert (embedding[0][:, 0] - embedding[1][:, 0]).abs().max() > 1e-3
    torch.testing.assert_close(lm[0][:, :6], lm[1][:, :6], rtol=0, atol=0)
    assert (lm[0][:, 6] - lm[1][:, 6]).abs().max() > 1e-3


@pytest.mark.parametrize("backend", BACKENDS)
def test_embedding_does_not_depend_on_batch_padding(workspace, backend):
    model = tiny_model(workspace, backend)
    tokenizer = AutoTokenizer.from_pretrained(workspace / "tokenizer")
    short, long = caption(3), " ".join(caption(i) for i in range(6))
    with torch.no_grad():
        alone = model.encode_text(**tokenizer([short], return_tensors="pt"))
        batch = tokenizer([short, long], padding=True, return_tensors="pt")
        assert batch["attention_mask"][0].sum() < batch["attention_mask"].shape[1] / 3  # mostly padding
        padded = model.encode_text(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(padded[0], alone[0], rtol=0, atol=2e-6)
    assert abs(float(alone.norm()) - 1) < 1e-5 and alone.shape == (1, model.config.embed_dim)


def test_lm_loss_is_transformers_next_token_loss_on_the_spliced_sequence(workspace):
    """Our loss (targets spliced after each row's own prefix, logits at labelled positions only)
    equals MistralForCausalLM's loss on the same rows laid out one at a time."""
    model = tiny_model(workspace)
    reference = MistralForCausalLM.from_pretrained(workspace / "mistral").eval()
    ids = torch.randint(5, model.config.encoder.vocab_size - 1, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    targets = torch.randint(4, reference.config.vocab_size, (2, 5))
    target_mask = torch.ones_like(targets)
    target_mask[0, 3:] = 0
    with torch.no_grad():
        ours = model(ids, mask, targets, target_mask).loss
        prefix, prefix_mask = model.prefix(ids, mask)
        losses, counts = [], []
        for row in range(2):
            p, t = int(prefix_mask[row].sum()), int(target_mask[row].sum())
            sequence = torch.cat([prefix[row, :p], reference.model.embed_tokens(targets[row, :t])])[None]
            labels = torch.cat([torch.full((p,), -100), targets[row, :t]])[None]
            for layer in reference.model.layers:  # the reference in plain causal mode
                layer.self_attn.is_causal = True
            losses.append(reference(inputs_embeds=sequence, labels=labels).loss * t)
            counts.append(t)
    torch.testing.assert_close(ours, sum(losses) / sum(counts), rtol=1e-5, atol=1e-5)


def test_merged_lora_weights_give_the_adapted_models_embeddings(workspace):
    model = tiny_model(workspace)
    for part in ("encoder", "llm"):
        add_lora(getattr(model, part), part, LoraSettings(dropout=0.0))
    assert not model.llm.layers[0].self_attn.q_proj.base_layer.weight.requires_grad
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.05)  # peft starts B at zero: make the adapters count
        ids = torch.randint(5, model.config.encoder.vocab_size - 1, (3, 8))
        adapted = model.encode_text(ids, torch.ones_like(ids))
        plain = LusiferModel(model.config)
        plain.load_state_dict(merge_lora(model.state_dict(), 32 / 16))
        torch.testing.assert_close(plain.eval().encode_text(ids, torch.ones_like(ids)), adapted, rtol=0, atol=1e-5)


def stage_config(root, name, stage, **extra):
    streams = {
        "align": {"reconstruction": {"kind": "text", "shards": [str(root / "text")], "batch_size": 8},
                  "completion": {"kind": "text_pair", "shards": [str(root / "text_pair")], "batch_size": 8}},
        "finetune": {"triplets": {"kind": "text_triplet", "shards": [str(root / "text_triplet")], "batch_size": 4}},
    }[stage]
    config = {
        "model": str(TINY_LUSIFER),
        "family": "lusifer",
        "model_overrides": model_overrides(root),
        "lusifer": {"stage": stage, "encoder": "lora", "llm": "frozen" if stage == "align" else "lora"},
        "steps": 8,
        "data": {"context_length": 24, "num_workers": 0, "shuffle_block": 4, "interleave": 1, "streams": streams},
        "optimizer": {"lr_text": 3e-3, "warmup_steps": 1, "weight_decay": 0.01},
        "precision": "fp32",
        "zero_stage": 1,
        "checkpoint": {"every_steps": 4, "keep_last": 10},
        "logging": {"every_steps": 1, "tensorboard": False},
        **extra,
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def losses(run):
    return [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]


def test_alignment_loss_falls(workspace):
    config = stage_config(workspace, "falls", "align", steps=20,
                          checkpoint={"every_steps": 1000, "keep_last": 1}, seed=3)
    assert cli_main(["train", str(config), "--output", str(workspace / "falls")]) == 0
    log = losses(workspace / "falls")
    assert sum(log[-5:]) / 5 < 0.9 * sum(log[:5]) / 5


@pytest.mark.slow
def test_both_stages_through_mmclip_train_resume_exactly(workspace):
    """align -> finetune (init_from: align's merged weights; GradCache chunks under ZeRO-3, as the
    7B config), each resumed from its mid-run checkpoint in a fresh directory: the same losses and
    final weights."""
    runs = {}
    for stage, extra in (("align", {}), ("finetune", {"grad_cache_chunk": {"triplets": 2}, "zero_stage": 3})):
        if stage == "finetune":
            extra["init_from"] = str(runs["align"] / "checkpoints" / "step_000008")
        config = stage_config(workspace, stage, stage, **extra)
        full, resumed = workspace / stage, workspace / f"{stage}_resumed"
        assert cli_main(["train", str(config), "--output", str(full)]) == 0
        middle = full / "checkpoints" / "step_000004"
        assert cli_main(["train", str(config), "--output", str(resumed), "--resume", str(middle)]) == 0
        assert losses(resumed)[-4:] == losses(full)[-4:]
        final = [load_file(run / "checkpoints" / "step_000008" / "model.safetensors") for run in (full, resumed)]
        assert final[0].keys() == final[1].keys() and all(torch.equal(final[0][k], final[1][k]) for k in final[0])
        assert not any("lora" in key for key in final[0])  # merged: plain module names only
        runs[stage] = full
    aligned = load_file(runs["align"] / "checkpoints" / "step_000008" / "model.safetensors")
    tuned = load_file(runs["finetune"] / "checkpoints" / "step_000008" / "model.safetensors")
    pretrained = tiny_model(workspace).state_dict()
    key = "llm.layers.0.self_attn.q_proj.weight"
    assert torch.equal(aligned[key], pretrained[key]) and not torch.equal(tuned[key], aligned[key])
    assert not torch.equal(tuned["connector.token"], aligned["connector.token"])

    # Export: AutoModel with remote code gives the training model's (merged) embeddings.
    checkpoint = runs["finetune"] / "checkpoints" / "step_000008"
    hf_dir = export(checkpoint, workspace / "hf")
    assert (hf_dir / "llm_tokenizer" / "tokenizer.json").is_file()
    hf = AutoModel.from_pretrained(str(hf_dir), trust_remote_code=True).eval()
    model = LusiferModel(hf.lusifer.config)
    model.load_state_dict(tuned)
    texts = [caption(1), SENTENCES[3], " ".join(caption(i) for i in range(4))]
    tokens = AutoTokenizer.from_pretrained(workspace / "tokenizer")(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model.eval().encode_text(tokens["input_ids"], tokens["attention_mask"]).numpy()
    assert hf.encode_text(texts) == pytest.approx(expected, abs=1e-5)
    assert hf.encode_text(texts[0]).shape == (model.config.embed_dim,)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lusifer": None}, "lusifer: is required with family lusifer"),
        ({"family": "clip"}, "lusifer: is required with family lusifer and only allowed with it"),
        ({"lusifer": {"stage": "align", "llm": "lora"}}, "lusifer.llm: the LLM stays frozen in alignment"),
        ({"lusifer": {"stage": "pretrain"}}, "lusifer.stage: must be one of ('align', 'finetune')"),
        ({"lusifer": {"stage": "finetune"}}, "data.streams.reconstruction.kind: a LUSIFER finetune stage reads"),
        ({"lusifer": {"stage": "align", "mask_ratio": 1.0}}, "lusifer.mask_ratio: must be in [0, 1)"),
        ({"grad_cache_chunk": {"completion": 4}}, "grad_cache_chunk: is for the contrastive (finetune) stage"),
        ({"clip": {"resolution_schedule": [{"step": 0, "image_size": 64}]}}, "clip: is the CLIP family's block, only allowed with it"),
    ],
)
def test_config_errors_name_the_key_and_file(workspace, change, message):
    config = stage_config(workspace, "bad", "align")
    data = yaml.safe_load(config.read_text())
    for key, value in change.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    config.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="bad.yaml") as error:
        load_train_config(config, [], world_size=1)
    assert message in str(error.value)


def test_model_config_errors(workspace):
    config = stage_config(workspace, "model_errors", "align")
    with pytest.raises(ConfigError, match=r"llm: needs \['hidden_size'"):
        load_train_config(config, ['model_overrides=["llm_pretrained=null"]'], world_size=1)
    with pytest.raises(ConfigError, match="llm_pretrained: no such file or directory"):
        load_train_config(config, ['model_overrides=["llm_pretrained=/nonexistent"]'], world_size=1)
    with pytest.raises(ConfigError, match="alignment targets need llm_tokenizer"):
        load_train_config(config, [f"model_overrides={json.dumps(model_overrides(workspace)[:3])}"], world_size=1)
    with pytest.raises(ConfigError, match="attn_implementation: must be one of"):
        load_train_config(config, [f"model_overrides={json.dumps([*model_overrides(workspace), 'attn_implementation=flash'])}"],
                          world_size=1)


def test_plain_text_records_and_llm_targets_in_the_loader(workspace):
    record = Text("k1", "a passage of plain text", "en", "wiki")
    assert decode("text", encode(record)) == record
    data = DataConfig(streams={"t": {"kind": "text", "shards": [str(workspace / "text")], "batch_size": 4},
                               "p": {"kind": "text_pair", "shards": [str(workspace / "text_pair")], "batch_size": 4}},
                      context_length=256, num_workers=0)
    llm = AutoTokenizer.from_pretrained(workspace / "mistral")
    batches = next(iter(MultiStreamLoader(data, load_tokenizer(workspace / "tokenizer"), target_tokenizer=llm)))
    assert {"text_ids", "text_mask", "text_target_ids", "text_target_mask"} <= set(batches["t"])
    assert {"query_ids", "positive_target_ids", "positive_target_mask"} <= set(batches["p"])
    row = batches["p"]["positive_target_ids"][0][batches["p"]["positive_target_mask"][0].bool()].tolist()
    assert row[0] == llm.bos_token_id and row[-1] == llm.eos_token_id  # <s> text </s>, as the reference's targets
    assert row[1:-1] == llm(caption(int(batches["p"]["keys"][0][4:]) + 1), add_special_tokens=False)["input_ids"]


def test_jsonl_builders_ms_marco_and_wikitext_styles(tmp_path):
    marco = tmp_path / "marco.jsonl"
    rows = [
        {"query": "what is a cube", "positive": ["a cube has six square faces", "other"],
         "negative": [f"negative passage number {i}" for i in range(7)], "language": "en"},
        {"query": "empty positives", "positive": [], "negative": ["x"], "language": "en"},
    ]
    marco.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert run_build(str(marco), str(tmp_path / "triplets"), "--kind", "text_triplet", "--negatives-field", "negative") == 0
    (triplet,) = read_records(tmp_path / "triplets")
    assert (triplet.query, triplet.positive, len(triplet.negatives)) == ("what is a cube", "a cube has six square faces", 7)

    wiki = tmp_path / "wiki.jsonl"
    lines = [" = Valkyria Chronicles III = ", "", "Senjō no Valkyria 3 is a tactical role-playing game developed by Sega."]
    wiki.write_text("".join(json.dumps({"text": line, "language": "en"}) + "\n" for line in lines))
    # 2 of 3 rows skipped on purpose (a heading and a blank line): the build accepts it
    assert run_build(str(wiki), str(tmp_path / "texts"), "--kind", "text", "--accept-skips") == 0
    assert [r.text for r in read_records(tmp_path / "texts")] == [lines[2]]
    skipped = [json.loads(line)["reason"] for line in (tmp_path / "texts" / "skipped.jsonl").read_text().splitlines()]
    assert sorted(skipped) == ["empty_text", "short_caption"]


# Table 4 of the paper: (global batch, LR, warm-up share, weight decay, clip, samples per step x steps).
TABLE_4 = {"align": (256, 1.5e-4, 0.1, 0.01, 1.0, 2 * 200_000), "finetune": (256, 5e-5, 0.1, 0.01, 1.0, 606_320)}


@pytest.mark.parametrize("stage", TABLE_4)
def test_stage_configs_are_table_4(stage):
    from mmclip.config import load_config
    from mmclip.models import LusiferConfig
    from mmclip.train.config import TrainConfig

    config = load_config(TrainConfig, REPO / "configs" / "lusifer" / f"{stage}.yaml")
    batch, lr, warmup, weight_decay, clip, samples = TABLE_4[stage]
    assert sum(stream.batch_size for stream in config.data.streams.values()) == batch
    assert (config.optimizer.lr_text, config.optimizer.weight_decay, config.optimizer.grad_clip) == (lr, weight_decay, clip)
    assert config.optimizer.warmup_steps == round(warmup * config.steps)
    assert config.steps == -(-samples // batch)  # epochs x samples, rounded up to whole steps
    assert (config.lusifer.lora.r, config.lusifer.lora.alpha) == (16, 32)
    assert config.precision == "bf16" and config.gradient_checkpointing and config.world_size == 8
    assert config.data.context_length == 512
    assert config.zero_stage == 3  # the 7B model sharded
    if stage == "align":
        assert config.lusifer.mask_ratio == 0.5 and config.lusifer.llm == "frozen"
    else:
        assert config.data.streams["retrieval"].num_negatives == 7 and config.lusifer.llm == "lora"
        assert config.grad_cache_chunk
    model = load_config(LusiferConfig, REPO / config.model)
    assert model.encoder.hidden_size == 1024 and model.encoder.depth == 24 and model.temperature == 0.05


def test_demo_runs_both_stages_and_scores_retrieval_per_language(tmp_path, capsys):
    """`mmclip demo --model lusifer` at a twentieth of its size: corpus, tiny Mistral, both stages,
    an export after each, mteb retrieval on the exports, the report."""
    output = tmp_path / "demo"
    assert cli_main(["demo", "--model", "lusifer", "--output", str(output), "--scale", "0.05"]) == 0
    report = json.loads((output / "report.json").read_text())
    assert list(report["stages"]) == ["align", "finetune"]
    languages = sorted(report["corpus"]["languages"])
    for stage in report["stages"].values():
        assert sorted(stage["ndcg@10"]) == languages and all(0 <= v <= 1 for v in stage["ndcg@10"].values())
        assert stage["loss"]["last"] > 0
    assert sorted(report["finetune_improves"]) == languages
    assert report["stages"]["align"]["checkpoint"] in (output / "runs" / "finetune" / "config.yaml").read_text()
    assert AutoModel.from_pretrained(str(output / "hf"), trust_remote_code=True).encode_text("ein Würfel").shape == (64,)
    out = capsys.readouterr().out
    assert "finetune: held-out text retrieval, nDCG@10" in out and "mean nDCG@10: alignment" in out


def test_export_is_indexed_and_searched_through_mmclip_search(workspace, tmp_path, capsys):
    """The one exported-model interface: `mmclip search` indexes and queries a LUSIFER export's texts
    as it does the dual encoder's; images are refused with a clear line."""
    model = tiny_model(workspace)
    model_checkpoint.write(tmp_path / "ckpt", model.config, model.state_dict())
    assert cli_main(["export", str(tmp_path / "ckpt"), "--output", str(tmp_path / "hf")]) == 0
    texts = [caption(i) for i in range(12)]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    index = tmp_path / "index"
    assert cli_main(["search", "index", str(tmp_path / "hf"), "--texts", str(tmp_path / "texts.txt"),
                     "--output", str(index), "--quiet"]) == 0
    assert f"added 12, 12 items in all (flat, {model.config.embed_dim}-d)" in capsys.readouterr().out
    for text in (texts[3], texts[7]):
        assert cli_main(["search", "query", str(index), text, "--k", "3", "--json"]) == 0
        hits = json.loads(capsys.readouterr().out)
        assert hits[0]["text"] == text and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    (tmp_path / "images").mkdir()
    assert cli_main(["search", "index", str(tmp_path / "hf"), "--images", str(tmp_path / "images"),
                     "--output", str(tmp_path / "index2")]) == 2
    assert "cannot index images" in capsys.readouterr().err
