"""`mmclip export`: the Hugging Face directory loads in a fresh process with no network and no
mmclip package, through transformers and sentence-transformers, and embeds like the training model."""

import importlib.util
import json
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import save_file

from mmclip import create_model
from mmclip.cli import main
from mmclip.data.transforms import ImageTransform, normalize
from data_pipelines.synthetic.tokenizer import train_tokenizer
from mmclip.tokenizer import tokenize
from mmclip import checkpoint as model_checkpoint

from .conftest import MULTILINGUAL_SENTENCES, TINY
from .test_weights import jina_clip_v2_dir, perturb_, tiny_clip

# Run in the child: mmclip cannot be imported and any socket connection fails.
FRESH_PROCESS = textwrap.dedent(
    """
    import socket, sys
    sys.modules["mmclip"] = None
    def refuse(*args, **kwargs):
        raise OSError("network access during an offline load")
    socket.socket.connect = refuse
    socket.create_connection = refuse

    import numpy as np
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    texts_file, images_file, *specs = sys.argv[1:]
    texts = open(texts_file, encoding="utf-8").read().splitlines()
    images = open(images_file).read().splitlines()
    for spec in specs:  # DIR, or DIR=DTYPE to load DIR's weights as DTYPE; into SPEC.npz
        directory, _, dtype = spec.partition("=")
        kwargs = {"dtype": dtype} if dtype else {}
        model = AutoModel.from_pretrained(directory, trust_remote_code=True, **kwargs)
        st = SentenceTransformer(directory, trust_remote_code=True, device="cpu", model_kwargs=kwargs)
        np.savez(
            spec + ".npz",
            text=model.encode_text(texts, batch_size=3),
            image=model.encode_image(images, batch_size=2),
            text16=model.encode_text(texts, truncate_dim=16),
            image16=model.encode_image(images, truncate_dim=16),
            st_text=st.encode(texts),
            st_image=st.encode([__import__("PIL.Image").Image.open(path) for path in images]),
            dtype=str(model.dtype),
        )
    """
)


def cosines(a, b):
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def make_checkpoint(root):
    """A model-checkpoint directory (model.safetensors, model.yaml, its tokenizer copied in) and its model."""
    train_tokenizer(MULTILINGUAL_SENTENCES * 20, 400, root / "tokenizer")
    torch.manual_seed(0)
    model = perturb_(create_model(TINY, overrides=[f"text.tokenizer={root / 'tokenizer'}"])).eval()
    model_checkpoint.write(root / "ckpt", model.config, model.state_dict())
    return root / "ckpt", model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    _, model = make_checkpoint(root)
    rng = np.random.default_rng(0)
    images = []
    for i, size in enumerate([(80, 60), (56, 90), (120, 120), (64, 57), (200, 100)]):
        path = root / f"image{i}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        images.append(path)
    return root, model, images


def reference(model, tokenizer_dir, texts, images, truncate_dim=None):
    """The training side's embeddings: mmclip tokenizer helper, eval ImageTransform, MMCLIP."""
    from transformers import AutoTokenizer

    tokens = tokenize(AutoTokenizer.from_pretrained(str(tokenizer_dir)), texts, 512)
    transform = ImageTransform(model.config.vision.image_size, train=False)
    pixels = normalize(torch.stack([transform(path.read_bytes()) for path in images]))
    with torch.no_grad():
        text = model.encode_text(tokens["input_ids"], tokens["attention_mask"], truncate_dim, normalize=True)
        image = model.encode_image(pixels, truncate_dim, normalize=True)
    return text.numpy(), image.numpy()


def test_export_round_trip_in_a_fresh_offline_process(checkpoint, tmp_path):
    root, model, images = checkpoint
    for dtype in ("fp32", "bf16"):
        output = tmp_path / dtype
        assert main(["export", str(root / "ckpt"), "--output", str(output), "--dtype", dtype]) == 0
        files = {path.name for path in output.iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json", "modules.json"} <= files
        assert {"modeling_mmclip.py", "configuration_mmclip.py", "clip.py", "attention.py"} <= files
        auto_map = json.loads((output / "config.json").read_text())["auto_map"]
        assert auto_map["AutoModel"] == "modeling_mmclip.MMCLIPHFModel"

    (tmp_path / "texts.txt").write_text("\n".join(MULTILINGUAL_SENTENCES), encoding="utf-8")
    (tmp_path / "images.txt").write_text("\n".join(map(str, images)))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    exports = [tmp_path / "fp32", tmp_path / "bf16", f"{tmp_path / 'bf16'}=float32"]
    args = [tmp_path / "texts.txt", tmp_path / "images.txt", *exports]
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, *map(str, args)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    text, image = reference(model, root / "tokenizer", MULTILINGUAL_SENTENCES, images)
    text16, image16 = reference(model, root / "tokenizer", MULTILINGUAL_SENTENCES, images, truncate_dim=16)
    # bf16 weights loaded as fp32 keep the training model's embeddings (measured minimum cosine
    # 0.99994); bf16 activations as well (the dtype the export loads in by default) cost more:
    # measured minimum 0.99985 (images), 0.99998 (texts).
    for spec, torch_dtype, min_cosine in (
        ("fp32", "torch.float32", 0.9999),
        ("bf16=float32", "torch.float32", 0.9999),
        ("bf16", "torch.bfloat16", 0.999),
    ):
        out = np.load(tmp_path / f"{spec}.npz")
        assert out["dtype"] == torch_dtype
        for ours, expected in (
            (out["text"], text),
            (out["image"], image),
            (out["text16"], text16),
            (out["image16"], image16),
        ):
            assert ours.dtype == np.float32 and ours.shape == expected.shape
            np.testing.assert_allclose(np.linalg.norm(ours, axis=-1), 1.0, atol=1e-5)  # normalised after truncation
            assert cosines(ours, expected).min() >= min_cosine, (spec, cosines(ours, expected))
        # sentence-transformers runs the same model through its own Transformer + Normalize modules.
        assert cosines(out["st_text"], out["text"]).min() >= 0.99999
        assert cosines(out["st_image"], out["image"]).min() >= 0.99999


def test_released_jina_clip_v2_directory_exports_the_same_way(checkpoint, tmp_path, caplog):
    from transformers import AutoModel

    torch.manual_seed(0)
    reference_model = perturb_(tiny_clip())
    source = jina_clip_v2_dir(tmp_path, reference_model)
    released = json.loads((source / "config.json").read_text())
    instruction = "Represent the query for retrieving evidence documents: "
    released["text_config"]["hf_model_config_kwargs"]["task_instructions"] = {"retrieval.query": instruction}
    (source / "config.json").write_text(json.dumps(released))
    train_tokenizer(MULTILINGUAL_SENTENCES[:3] * 20, 100, source)  # released dirs ship their tokenizer (Latin: 100 ids)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(model_checkpoint.config_dict(reference_model.config), sort_keys=False))

    output = tmp_path / "hf"
    config = ["--config", str(tmp_path / "tiny.yaml"), "--set", "attention_backend=auto"]
    assert main(["export", str(source), "--output", str(output), *config]) == 0
    with caplog.at_level(logging.WARNING):
        model = AutoModel.from_pretrained(output, trust_remote_code=True)
    fallback = not (importlib.util.find_spec("flash_attn") or importlib.util.find_spec("xformers"))
    assert ("attention runs on torch SDPA" in caplog.text) == fallback
    texts, images = MULTILINGUAL_SENTENCES[:3], checkpoint[2]
    text, image = reference(reference_model, source, texts, images)
    assert cosines(model.encode_text(texts), text).min() >= 0.9999
    assert cosines(model.encode_image(images), image).min() >= 0.9999
    prefixed, _ = reference(reference_model, source, [instruction + t for t in texts], images)
    assert cosines(model.encode_text(texts, task="retrieval.query"), prefixed).min() >= 0.9999

    with pytest.raises(ValueError, match=r"truncate_dim must be one of the Matryoshka dimensions \[32, 64\]"):
        model.encode_text(texts, truncate_dim=48)
    with pytest.raises(ValueError, match="unknown task 'retrieval.passage'"):
        model.encode_text(texts, task="retrieval.passage")
    assert model.encode_text("one text").shape == (64,)


def test_export_errors_name_the_problem(checkpoint, tmp_path, capsys):
    root, _, _ = checkpoint
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "file").write_text("")
    assert main(["export", str(root / "ckpt"), "--output", str(tmp_path / "full")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--output", str(tmp_path / "new")]) == 2
    assert "neither a training checkpoint (model.yaml) nor a jina-clip-v2 directory" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
