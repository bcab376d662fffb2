"""`mmclip finetune`: from a folder of captioned images and a model users have (a released jina-clip-v2
directory with its LoRA factors, a whole open_clip checkpoint) to an exported model, held-out retrieval
before and after, and a search index; all in-process through the real builder, trainer and export."""

import dataclasses
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from transformers import AutoModel, AutoTokenizer, XLMRobertaModel

from data_pipelines.synthetic.tokenizer import train_tokenizer
from mmclip.cli import main
from mmclip.factory import load_model_config
from mmclip.models import MMCLIP, CLIPConfig
from mmclip.search import SearchIndex, build_index, load_model, search

from .conftest import TINY
from .test_weights import (
    jina_clip_v2_dir,
    open_clip_clip_config,
    open_clip_xlm_r_model,
    save_open_clip,
    text_config,
    timm_checkpoint,
    vision_config,
    xlm_roberta_dir,
)

# name: (RGB, German name); captions in English or German, long enough for py3langid to tell them apart
COLOURS = {
    "red": ((220, 30, 30), "rot"), "green": ((30, 200, 40), "grün"), "blue": ((30, 40, 220), "blau"),
    "yellow": ((230, 220, 30), "gelb"), "black": ((15, 15, 15), "schwarz"), "white": ((240, 240, 240), "weiß"),
    "purple": ((140, 30, 160), "lila"), "orange": ((240, 140, 20), "orange"),
}


def english(colour):
    return f"this picture is completely {colour} and nothing else"


def german(colour):
    return f"dieses Bild ist vollständig {COLOURS[colour][1]} und sonst nichts"


INSTRUCTION = "Represent the query for retrieving evidence documents: "


def captioned_folder(directory, per_colour, seed):
    """``{colour}_{i}.png`` + ``.txt``: a noisy shade of the colour, captioned in English or German by turns."""
    rng = np.random.default_rng(seed)
    directory.mkdir()
    for name, (rgb, _) in COLOURS.items():
        for i in range(per_colour):
            pixels = np.clip(np.array(rgb) + rng.normal(0, 12, (56, 56, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(directory / f"{name}_{i}.png")
            (directory / f"{name}_{i}.txt").write_text(english(name) if i % 2 == 0 else german(name))
    return directory


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    train = captioned_folder(root / "train", per_colour=6, seed=0)
    heldout = captioned_folder(root / "heldout", per_colour=2, seed=1)
    captions = [caption(colour) for colour in COLOURS for caption in (english, german)] + [INSTRUCTION]
    return root, train, heldout, captions


def finetune(*args):
    fixed = ["--workers", "1", "--build-arg=--no-dedup", "--set", "data.num_workers=0"]
    assert main(["finetune", *map(str, args), *fixed]) == 0


@pytest.mark.slow
def test_jina_clip_v2_lora_text_locked_vision(folders):
    root, train, heldout, captions = folders
    torch.manual_seed(0)
    reference = MMCLIP(load_model_config(TINY))
    (root / "jina-clip-v2").mkdir()
    base = jina_clip_v2_dir(root / "jina-clip-v2", reference)
    released = json.loads((base / "config.json").read_text())
    released["text_config"]["hf_model_config_kwargs"]["task_instructions"] = {"retrieval.query": INSTRUCTION}
    (base / "config.json").write_text(json.dumps(released))
    train_tokenizer(captions * 20, vocab_size=300, output_dir=base)  # the released directory has its tokenizer

    run = root / "run-jina"
    finetune(base, train, "--output", run, "--eval", heldout, "--config", TINY, "--steps", 60, "--batch-size", 16,
             "--set", "optimizer.lr_text=1e-2", "--set", "optimizer.lr_logit_scale=1e-2",
             "--set", "clip.towers.lora.dropout=0")

    stage = yaml.safe_load((run / "stage.yaml").read_text())
    towers = stage["clip"]["towers"]
    assert towers["vision"] == {"mode": "lock", "unlocked_layers": 0} and towers["text"]["mode"] == "lora"
    report = json.loads((run / "report.json").read_text())
    assert report["base_kind"] == "jina-clip-v2" and report["pairs"] == 48
    assert sorted(report["after"]) == ["de", "en"]  # one annotation file per identified language
    assert report["gain"]["recall@5"] > 0.15, report  # held-out retrieval improved over the base model

    model = AutoModel.from_pretrained(str(run / "hf"), trust_remote_code=True).eval()
    assert model.config.task_instructions == {"retrieval.query": INSTRUCTION}
    assert model.config.clip["text"]["lora_adapter"] == "retrieval.query"  # which base adapter is merged in
    query = model.encode_text([english("red")], task="retrieval.query")
    np.testing.assert_allclose(query, model.encode_text([INSTRUCTION + english("red")]), atol=1e-6)

    build_index(run / "hf", images=[heldout], output=run / "index", progress=False)
    index, searcher = SearchIndex.load(run / "index"), load_model(run / "hf")
    # Each caption of the 16 held-out images (two per colour): an image of its colour among the first 5
    # (t2i@5 is 1 per language), and first for most of them (chance: 2 in 16).
    hits = {(colour, caption.__name__): [hit["path"].rpartition("/")[2] for hit in
                                         search(index, searcher, text=caption(colour), k=5)]
            for colour in COLOURS for caption in (english, german)}
    assert sum(any(name.startswith(colour + "_") for name in names) for (colour, _), names in hits.items()) >= 15, hits
    assert sum(names[0].startswith(colour + "_") for (colour, _), names in hits.items()) >= 10, hits


@pytest.mark.slow
def test_open_clip_whole_checkpoint_exports_its_image_embeddings(folders):
    root, train, _, captions = folders
    torch.manual_seed(0)
    reference = open_clip_xlm_r_model(root, vision_proj=None)  # the trunk head (with bias) is the projection
    checkpoint = save_open_clip(reference, root / "epoch_1.pt")
    model_yaml = root / "open_clip_model.yaml"
    model_yaml.write_text(yaml.safe_dump(dataclasses.asdict(open_clip_clip_config(vision_proj_bias=False))))
    tokenizer = root / "open-clip-tokenizer"
    train_tokenizer(captions * 20, vocab_size=100, output_dir=tokenizer)

    run = root / "run-open-clip"
    finetune(checkpoint, train, "--output", run, "--config", model_yaml, "--tokenizer", tokenizer, "--steps", 4,
             "--batch-size", 8, "--vision", "frozen", "--text", "lora")

    stage = yaml.safe_load((run / "stage.yaml").read_text())
    assert "vision_proj_bias=True" in stage["model_overrides"] and "projections=true" in stage["model_overrides"]
    exported = AutoModel.from_pretrained(str(run / "hf"), trust_remote_code=True).eval()
    pixels = torch.randn(3, 3, 56, 56)
    with torch.no_grad():  # the frozen vision tower and its projection: open_clip's own embeddings, untouched
        torch.testing.assert_close(exported.get_image_features(pixels), reference.encode_image(pixels),
                                   atol=1e-5, rtol=1e-5)

    # The export is a base model too: its architecture, weights and tokenizer travel in the directory.
    again = root / "run-from-export"
    finetune(run / "hf", train, "--output", again, "--steps", 2, "--batch-size", 8, "--vision", "frozen")
    assert json.loads((again / "report.json").read_text())["base_kind"] == "mmclip export"
    exported = AutoModel.from_pretrained(str(again / "hf"), trust_remote_code=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(exported.get_image_features(pixels), reference.encode_image(pixels),
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_a_timm_vision_checkpoint_with_an_hf_xlm_r_as_text_base(folders):
    # EVA02-L-14's timm weights and xlm-roberta-large, at toy size, each saved by its own library.
    root, train, _, captions = folders
    torch.manual_seed(0)
    (root / "timm").mkdir()
    vision_file, timm_model = timm_checkpoint(root / "timm")
    text_dir = xlm_roberta_dir(root / "xlm-roberta")
    train_tokenizer(captions * 20, vocab_size=100, output_dir=text_dir)
    model_yaml = root / "timm_xlm_r_model.yaml"  # both 64 wide: no projections, as jina-clip-v2
    model_yaml.write_text(yaml.safe_dump(dataclasses.asdict(CLIPConfig(
        embed_dim=64, matryoshka_dims=[32, 64], attention_backend="sdpa", vision=vision_config(),
        text=text_config(position_embedding="rotary")))))

    run = root / "run-text-base"
    # LoRA on the text tower at a vanishing LR: the export's towers are then the bases as loaded.
    finetune(vision_file, train, "--text-base", text_dir, "--output", run, "--config", model_yaml, "--steps", 2,
             "--batch-size", 8, "--vision", "frozen", "--text", "lora", "--set", "optimizer.lr_text=1e-12")

    assert json.loads((run / "report.json").read_text())["base_kind"] == "vision checkpoint + text model"
    stage = yaml.safe_load((run / "stage.yaml").read_text())
    # The HF model's absolute positions and table length replace the YAML's rotary ones.
    assert {"text.position_embedding=absolute", "text.max_position_embeddings=40"} <= set(stage["model_overrides"])
    exported = AutoModel.from_pretrained(str(run / "hf"), trust_remote_code=True).eval()
    pixels = torch.randn(3, 3, 56, 56)
    tokenizer = AutoTokenizer.from_pretrained(str(run / "hf"))
    batch = tokenizer(["a red dog", "blau", "nothing else"], padding=True, return_tensors="pt")
    assert not batch["attention_mask"].all()  # padding in the batch: the mean is over real tokens
    with torch.no_grad():  # timm's pre-logits features (its head dropped), XLM-R's mean over real tokens
        expected = timm_model.forward_head(timm_model.forward_features(pixels), pre_logits=True)
        torch.testing.assert_close(exported.get_image_features(pixels), expected, atol=1e-5, rtol=1e-5)
        states = XLMRobertaModel.from_pretrained(str(text_dir), add_pooling_layer=False)(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        torch.testing.assert_close(exported.get_text_features(batch["input_ids"], batch["attention_mask"]),
                                   (states * mask).sum(1) / mask.sum(1), atol=1e-5, rtol=1e-5)
