"""sentence-transformers and mteb as their users call them, offline on local tasks: the export's ST
load answers its dimension and truncates, ``mteb.evaluate`` runs on it, the export's own ModelMeta
loads the model for mteb, and ``mmclip eval mteb`` writes mteb's result files for an export and a checkpoint."""

import json

import numpy as np
import pytest

from mmclip.cli import main
from mmclip.export import export
from mmclip.search import load_model

from .test_eval_report import LANGUAGES, checkpoint_and_eval_sets
from .test_export import cosines


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("mteb")
    checkpoint = checkpoint_and_eval_sets(root)
    export(checkpoint, root / "export")
    return root, checkpoint, load_model(root / "export")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def scores(results) -> dict[str, dict[str, float]]:
    return {
        r.task_name: {entry["hf_subset"]: entry["main_score"] for entry in r.scores["test"]}
        for r in results.task_results
    }


def test_sentence_transformers_load_answers_its_dimension_and_truncates(setup):
    from sentence_transformers import SentenceTransformer

    root, _, _ = setup
    texts = ["ein Hund im Schnee", "a dog in the snow", "दो नीली गेंदें"]
    full = SentenceTransformer(str(root / "export"), trust_remote_code=True, device="cpu")
    assert full.get_embedding_dimension() == 64
    short = SentenceTransformer(str(root / "export"), trust_remote_code=True, device="cpu", truncate_dim=16)
    assert short.get_embedding_dimension() == 16
    embeddings = short.encode(texts)
    assert embeddings.shape == (3, 16)
    # The Matryoshka prefix of the same model: the direction encode_text(truncate_dim=16) gives.
    expected = load_model(root / "export").encode_text(texts, truncate_dim=16)
    assert cosines(embeddings, expected).min() >= 0.9999


def test_mteb_evaluate_on_the_sentence_transformers_load(setup):
    import mteb
    from sentence_transformers import SentenceTransformer

    from eval.mteb_tasks import MMCLIPEncoder, local_sts, local_text_retrieval, run_tasks

    root, _, _ = setup
    tasks = [local_sts(root / "eval" / "sts"), local_text_retrieval(root / "eval" / "text_retrieval")]
    st = SentenceTransformer(str(root / "export"), trust_remote_code=True, device="cpu")
    results = scores(mteb.evaluate(st, tasks, cache=None, show_progress_bar=False))
    assert sorted(results) == ["SyntheticSTS", "SyntheticTextRetrieval"]
    # The same embeddings as mmclip's own encoder (no task instructions in this model): the same scores.
    ours = run_tasks(MMCLIPEncoder(root / "export"), tasks)
    for task, subsets in ours.items():
        assert sorted(results[task]) == sorted(LANGUAGES)
        for subset, value in subsets.items():
            assert results[task][subset] == pytest.approx(value, abs=1e-4)


def test_the_exports_model_meta_loads_the_model_for_mteb(setup):
    import mteb

    from eval.mteb_tasks import MMCLIPEncoder, load_model_meta, local_sts

    root, _, model = setup
    meta = load_model_meta(root / "export")
    assert meta.name == "mmclip/export" and meta.embed_dim == [64, 32, 16]
    assert meta.n_parameters == sum(p.numel() for p in model.clip.parameters()) and meta.modalities == ["image", "text"]
    assert isinstance(meta.load_model(embed_dim=32), MMCLIPEncoder)
    task = local_sts(root / "eval" / "sts")
    by_meta = scores(mteb.evaluate(load_model_meta(root / "export", 16), [task], cache=None, show_progress_bar=False))
    direct = scores(mteb.evaluate(MMCLIPEncoder(root / "export", 16), [task], cache=None, show_progress_bar=False))
    assert by_meta == direct
    with pytest.raises(ValueError, match=r"one of the Matryoshka dimensions \[64, 32, 16\], got 48"):
        load_model_meta(root / "export", 48)


def test_encoders_sharing_full_width_embeddings_score_as_each_width_alone(setup, monkeypatch):
    # mmclip eval report: each text encoded once at the full width, every width a re-normalised prefix.
    from eval.mteb_tasks import MMCLIPEncoder, local_sts, local_text_retrieval, run_tasks

    root, _, model = setup
    tasks = [local_sts(root / "eval" / "sts"), local_text_retrieval(root / "eval" / "text_retrieval")]
    encoded = []
    encode_text = model.encode_text

    def counting(sentences, **kwargs):
        encoded.extend(sentences)
        return encode_text(sentences, **kwargs)

    full_width = {}
    monkeypatch.setattr(model, "encode_text", counting)
    shared = {dim: run_tasks(MMCLIPEncoder(root / "export", dim, model, full_width), tasks) for dim in (16, 32, None)}
    assert len(encoded) == len(set(encoded)) == len(full_width)  # once each, over the three widths
    monkeypatch.setattr(model, "encode_text", encode_text)
    for dim, scores_at_dim in shared.items():
        alone = run_tasks(MMCLIPEncoder(root / "export", dim, model), tasks)
        assert sorted(alone) == sorted(scores_at_dim)
        for task, subsets in alone.items():
            assert scores_at_dim[task] == pytest.approx(subsets, abs=1e-5)
    assert shared[16] != shared[None]  # the widths differ, so the prefix really is taken


def test_text_retrieval_ranks_the_top_100_and_scores_as_with_mteb_default_top_1000(setup, tmp_path):
    # mteb ranks max(k_values) texts per query in Python heaps: its default 1000, half of a demo
    # corpus, took most of the report's time. The main score, nDCG@10, must not notice the cut.
    from mteb.abstasks.retrieval import AbsTaskRetrieval

    from data_pipelines.synthetic.eval_sets import write_text_retrieval
    from data_pipelines.synthetic.samples import Context
    from eval.mteb_tasks import MMCLIPEncoder, local_text_retrieval, run_tasks

    root, _, model = setup
    counts = write_text_retrieval(tmp_path, Context(5, LANGUAGES), 60)
    ours = local_text_retrieval(tmp_path)
    top_1000 = type("Top1000", (type(ours),), {"k_values": AbsTaskRetrieval.k_values})()
    assert max(ours.k_values) == 100 < min(entry["corpus"] for entry in counts.values()) < 1000
    encoder = MMCLIPEncoder(root / "export", model=model)
    cut = run_tasks(encoder, [ours])["SyntheticTextRetrieval"]
    assert sorted(cut) == sorted(LANGUAGES)
    assert cut == pytest.approx(run_tasks(encoder, [top_1000])["SyntheticTextRetrieval"], abs=1e-9)


def result_files(output):
    """``{task: json}`` of mteb's result folder (one model, one revision) and its model_meta.json."""
    (model_folder,) = (output / "results").iterdir()
    (revision,) = model_folder.iterdir()
    files = {path.stem: json.loads(path.read_text()) for path in revision.glob("*.json")}
    return model_folder.name, revision.name, files


def test_mmclip_eval_mteb_on_an_export_and_on_a_checkpoint(setup, tmp_path, capsys):
    root, checkpoint, _ = setup
    tasks = ["--tasks", "SyntheticSTS", "SyntheticTextRetrieval", "--data", str(root / "eval"), "--languages", "deu"]
    assert main(["eval", "mteb", str(root / "export"), *tasks, "--output", str(tmp_path / "export")]) == 0
    assert "SyntheticSTS test de:" in capsys.readouterr().out
    name, revision, files = result_files(tmp_path / "export")
    assert name == "mmclip__export" and sorted(files) == ["SyntheticSTS", "SyntheticTextRetrieval", "model_meta"]
    assert files["model_meta"]["revision"] == revision
    for task in ("SyntheticSTS", "SyntheticTextRetrieval"):
        assert [entry["hf_subset"] for entry in files[task]["scores"]["test"]] == ["de"]  # --languages deu

    # A checkpoint is exported first (into OUTPUT/model): the same weights, the same scores.
    argv = ["eval", "mteb", str(checkpoint), *tasks, "--dim", "16", "--output", str(tmp_path / "checkpoint")]
    assert main(argv) == 0
    assert (tmp_path / "checkpoint" / "model" / "mteb_model_meta.json").is_file()
    name16, revision16, files16 = result_files(tmp_path / "checkpoint")
    assert name16 == "mmclip__model-d16" and revision16 == revision
    assert files16["model_meta"]["embed_dim"] == 16
    for task in ("SyntheticSTS", "SyntheticTextRetrieval"):
        assert np.isfinite(files16[task]["scores"]["test"][0]["main_score"])

    assert main(["eval", "mteb", str(root / "export"), "--tasks", "SyntheticSTS", "--output", str(tmp_path / "x")]) == 2
    assert "task SyntheticSTS reads sts/ under --data" in capsys.readouterr().err
