"""MTEB 2.x: an encoder with real model metadata, local tasks in mteb's own task classes, ViDoRe.

* :class:`MMCLIPEncoder`: ``mteb.models.AbsEncoder`` over an ``mmclip export`` directory (the dual
  encoder: text and images, at the full width or a Matryoshka prefix; LUSIFER: text), with the
  export's own ``ModelMeta`` (:func:`load_model_meta`: name, revision = a fingerprint of config +
  weights, parameters, dims, modalities), which also loads it: ``mteb.evaluate(load_model_meta(DIR), tasks)``.
* :data:`LUSIFER_BENCHMARK`: the LUSIFER paper's evaluation tasks by mteb name, per language
  (:func:`lusifer_tasks`; they download from the hub).
* :func:`local_sts`, :func:`local_text_retrieval`: ``AbsTaskSTS`` / ``AbsTaskRetrieval`` read from
  the synthetic corpus's ``eval/sts`` and ``eval/text_retrieval`` (one hf_subset per language).
* :func:`vidore_task`: mteb's own ViDoRe task class (``VidoreArxivQARetrieval``: its loader,
  ``DocumentUnderstanding`` type, nDCG@5) pointed at a local ViDoRe-format dataset converted from
  the BEIR document set (``eval/documents``).

For the public benchmarks (the paper's Table 3 lists) pass mteb task names: ``mteb.get_tasks``
downloads them, which needs the network; everything here runs offline with ``cache=None``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.sts import AbsTaskSTS
from mteb.models.abs_encoder import AbsEncoder

# Synthetic language codes -> mteb's ISO 639-3 + script.
ISO = {
    "en": "eng-Latn", "de": "deu-Latn", "fr": "fra-Latn", "es": "spa-Latn", "ru": "rus-Cyrl", "zh": "zho-Hans",
    "ja": "jpn-Jpan", "hi": "hin-Deva", "ar": "ara-Arab", "it": "ita-Latn", "ko": "kor-Hang", "pl": "pol-Latn",
    "tr": "tur-Latn",
}  # fmt: skip
QUERY_TASK = "retrieval.query"  # jina-clip-v2's instruction, used for queries when the model has it

# The LUSIFER paper's evaluation (Man et al., 2025, Appendix B: 14 languages, 123 datasets), by
# ISO 639-3 language, under the names mteb 2.x knows (three typos of the paper's tables fixed:
# BIOSSES, MTOPIntentClassification, XNLIV2; renamed tasks resolve through mteb's aliases).
LUSIFER_BENCHMARK = {
    "spa": [
        "AmazonReviewsClassification", "MassiveIntentClassification", "MassiveScenarioClassification",
        "MTOPIntentClassification", "MultilingualSentimentClassification", "TweetSentimentClassification",
        "SpanishNewsClassification", "PawsXPairClassification", "XNLI", "SpanishNewsClusteringP2P",
        "MLSUMClusteringP2P", "MLSUMClusteringS2S", "SIB200ClusteringS2S",
        "MultiEURLEXMultilabelClassification", "BelebeleRetrieval", "MintakaRetrieval", "STS17", "STS22",
        "STSBenchmarkMultilingualSTS"
    ],
    "eng": [
        "AmazonCounterfactualClassification", "AmazonPolarityClassification", "AmazonReviewsClassification",
        "Banking77Classification", "EmotionClassification", "ImdbClassification", "MassiveIntentClassification",
        "MassiveScenarioClassification", "MTOPDomainClassification", "MTOPIntentClassification",
        "ToxicConversationsClassification", "TweetSentimentExtractionClassification",
        "SprintDuplicateQuestions", "TwitterSemEval2015", "TwitterURLCorpus", "ArxivClusteringP2P",
        "ArxivClusteringS2S", "BiorxivClusteringP2P", "BiorxivClusteringS2S", "MedrxivClusteringP2P",
        "MedrxivClusteringS2S", "RedditClustering", "RedditClusteringP2P", "StackExchangeClustering",
        "StackExchangeClusteringP2P", "TwentyNewsgroupsClustering", "AskUbuntuDupQuestions",
        "MindSmallReranking", "SciDocsRR", "StackOverflowDupQuestions", "ArguAna", "ClimateFEVER",
        "CQADupstackTexRetrieval", "DBPedia", "FEVER", "FiQA2018", "HotpotQA", "MSMARCO", "NFCorpus", "NQ",
        "QuoraRetrieval", "SCIDOCS", "SciFact", "Touche2020", "TRECCOVID", "STS12", "STS13", "STS14", "STS15",
        "STS16", "STS17", "STS22", "BIOSSES", "SICK-R", "STSBenchmark", "SummEval"
    ],
    "rus": [
        "GeoreviewClassification", "HeadlineClassification", "InappropriatenessClassification",
        "KinopoiskClassification", "MassiveIntentClassification", "MassiveScenarioClassification",
        "RuReviewsClassification", "RuSciBenchGRNTIClassification", "RuSciBenchOECDClassification",
        "GeoreviewClusteringP2P", "RuSciBenchGRNTIClusteringP2P", "RuSciBenchOECDClusteringP2P", "TERRa",
        "RiaNewsRetrieval", "RuBQRetrieval", "RuSTSBenchmarkSTS", "STS22"
    ],
    "fra": [
        "AmazonReviewsClassification", "MTOPIntentClassification", "MassiveIntentClassification",
        "MassiveScenarioClassification", "TweetSentimentClassification", "SIB200Classification",
        "FrenchBookReviews", "PawsXPairClassification", "RTE3", "XNLI", "MasakhaNEWSClusteringP2P",
        "MasakhaNEWSClusteringS2S", "MLSUMClusteringP2P", "MLSUMClusteringS2S", "HALClusteringS2S",
        "SIB200ClusteringS2S", "MultiEURLEXMultilabelClassification", "BelebeleRetrieval", "MintakaRetrieval",
        "OpusparcusPC", "STS17", "SICKFr", "STS22", "STSBenchmarkMultilingualSTS", "SummEvalFr"
    ],
    "vie": [
        "MassiveIntentClassification", "MassiveScenarioClassification", "MultilingualSentimentClassification",
        "SIB200Classification", "VieStudentFeedbackClassification", "XNLI", "SIB200ClusteringS2S",
        "BelebeleRetrieval", "MLQARetrieval", "VieQuADRetrieval"
    ],
    "fas": [
        "MassiveScenarioClassification", "MassiveIntentClassification", "MultilingualSentimentClassification",
        "FarsTail", "WikipediaRerankingMultilingual", "WikipediaRetrievalMultilingual"
    ],
    "ind": [
        "IndonesianMongabayConservationClassification", "MassiveIntentClassification",
        "MassiveScenarioClassification", "SIB200Classification", "indonli", "SIB200ClusteringS2S",
        "BelebeleRetrieval", "SemRel24STS"
    ],
    "ara": [
        "TweetEmotionClassification", "ArEntail", "XNLI", "MintakaRetrieval", "MLQARetrieval", "STS17", "STS22"
    ],
    "fin": [
        "FinToxicityClassification", "MassiveIntentClassification", "MassiveScenarioClassification",
        "MultilingualSentimentClassification", "SIB200Classification", "WikipediaRerankingMultilingual",
        "BelebeleRetrieval", "WikipediaRetrievalMultilingual", "OpusparcusPC", "FinParaSTS"
    ],
    "kor": [
        "MassiveIntentClassification", "MassiveScenarioClassification", "KorSarcasmClassification",
        "SIB200Classification", "KorHateSpeechMLClassification", "PawsXPairClassification", "KLUE-TC",
        "SIB200ClusteringS2S", "Ko-StrategyQA", "BelebeleRetrieval", "KLUE-STS", "KorSTS", "STS17"
    ],
    "hin": [
        "MTOPIntentClassification", "SentimentAnalysisHindi", "MassiveIntentClassification",
        "MassiveScenarioClassification", "SIB200Classification", "TweetSentimentClassification", "XNLI",
        "IndicReviewsClusteringP2P", "SIB200ClusteringS2S", "WikipediaRerankingMultilingual",
        "BelebeleRetrieval", "MintakaRetrieval", "MLQARetrieval", "WikipediaRetrievalMultilingual",
        "IndicCrosslingualSTS", "SemRel24STS"
    ],
    "ben": [
        "BengaliDocumentClassification", "BengaliHateSpeechClassification", "MassiveIntentClassification",
        "MassiveScenarioClassification", "XNLIV2", "IndicReviewsClusteringP2P", "SIB200ClusteringS2S",
        "WikipediaRerankingMultilingual", "BelebeleRetrieval", "IndicQARetrieval",
        "WikipediaRetrievalMultilingual", "IndicCrosslingualSTS"
    ],
    "tel": [
        "IndicNLPNewsClassification", "IndicSentimentClassification", "MassiveIntentClassification",
        "MassiveScenarioClassification", "SIB200Classification", "TeluguAndhraJyotiNewsClassification",
        "IndicReviewsClusteringP2P", "SIB200ClusteringS2S", "BelebeleRetrieval", "IndicQARetrieval",
        "IndicCrosslingualSTS", "SemRel24STS"
    ],
    "swa": [
        "AfriSentiClassification", "MasakhaNEWSClassification", "MassiveIntentClassification",
        "MassiveScenarioClassification", "SwahiliNewsClassification", "XNLI", "MasakhaNEWSClusteringP2P",
        "MasakhaNEWSClusteringS2S"
    ],
}


def lusifer_tasks(languages: list[str] | None = None) -> list:
    """mteb tasks of the LUSIFER benchmark, each restricted to its language's subsets (needs the hub)."""
    import mteb

    tasks = []
    for language in languages or LUSIFER_BENCHMARK:
        if language not in LUSIFER_BENCHMARK:
            raise ValueError(f"the LUSIFER benchmark has no language {language!r}; it has {sorted(LUSIFER_BENCHMARK)}")
        tasks += mteb.get_tasks(tasks=LUSIFER_BENCHMARK[language], languages=[language])
    return tasks


def load_model_meta(model_dir: str | Path, truncate_dim: int | None = None):
    """mteb's ``ModelMeta`` of an export (its ``mteb_model_meta.json``, written by ``mmclip export``),
    with a loader: ``mteb.evaluate(load_model_meta(DIR), tasks)`` loads :class:`MMCLIPEncoder` itself.
    At a Matryoshka prefix the name gains ``-d{dim}``, so each width has its own result folder."""
    from mteb.models.model_meta import ModelMeta, ScoringFunction

    from mmclip.mteb_meta import MTEB_META_FILE

    model_dir = Path(model_dir)
    path = model_dir / MTEB_META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir}: no {MTEB_META_FILE}; export the checkpoint again with mmclip export")
    fields = json.loads(path.read_text())
    fields["similarity_fn_name"] = ScoringFunction(fields["similarity_fn_name"])  # mteb compares the enum by identity
    if truncate_dim is not None:
        if truncate_dim not in fields["embed_dim"]:
            raise ValueError(f"truncate_dim must be one of the Matryoshka dimensions {fields['embed_dim']}, got {truncate_dim}")
        fields.update(name=f"{fields['name']}-d{truncate_dim}", embed_dim=truncate_dim)
    loader_kwargs = {"model_dir": str(model_dir), "truncate_dim": truncate_dim}
    return ModelMeta.create_empty(overwrites={**fields, "loader": _load_encoder, "loader_kwargs": loader_kwargs})


def _load_encoder(name: str, revision: str | None = None, *, model_dir: str, truncate_dim: int | None = None,
                  embed_dim: int | None = None, device: str | None = None, **kwargs):
    """mteb's loader protocol (``ModelMeta.load_model``; ``embed_dim``: mteb's name for a Matryoshka
    width); the export's directory comes from ``loader_kwargs``."""
    encoder = MMCLIPEncoder(model_dir, truncate_dim or embed_dim)
    if device is not None:
        encoder.model.to(device)
    return encoder


class MMCLIPEncoder(AbsEncoder):
    """mteb's encoder protocol over an exported model; a Matryoshka prefix with ``truncate_dim``.

    ``full_width``: a dict that the encoders of one model at several widths share. Each text and
    image is then encoded once, at the full width, and every width takes its prefix, re-normalised:
    the vectors ``truncate_dim`` gives (the prefix of a scaled vector normalises to the same one).
    """

    def __init__(self, model_dir: str | Path, truncate_dim: int | None = None, model=None,
                 full_width: dict | None = None):
        from mmclip.search import load_model

        self.model_dir = Path(model_dir)
        self.model = model if model is not None else load_model(self.model_dir)
        self.truncate_dim = truncate_dim
        self.model.check_truncate_dim(truncate_dim)
        self.mteb_model_meta = load_model_meta(self.model_dir, truncate_dim)
        self.full_width = full_width

    def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs) -> np.ndarray:
        from mteb.types import PromptType

        features = inputs.dataset.features
        task = (
            QUERY_TASK
            if prompt_type == PromptType.query and QUERY_TASK in self.model.config.task_instructions
            else None
        )
        batch_size = kwargs.get("batch_size", 32)
        chunks = []
        for batch in inputs:
            text = image = None
            if "text" in features:
                text = self._embed("text", batch["text"], task, batch_size)
            if "image" in features:
                image = self._embed("image", batch["image"], None, batch_size)
            # Both present (an interleaved document): the sum, as mteb's jina-clip wrapper does.
            chunks.append(text if image is None else image if text is None else text + image)
        return np.concatenate(chunks)

    def _embed(self, modality: str, items: list, task: str | None, batch_size: int) -> np.ndarray:
        def encode(inputs, truncate_dim):
            if modality == "text":
                return self.model.encode_text(inputs, task=task, batch_size=batch_size, truncate_dim=truncate_dim)
            return self.model.encode_image(inputs, batch_size=batch_size, truncate_dim=truncate_dim)

        if self.full_width is None:
            return encode(items, self.truncate_dim)
        keys = [(modality, task, _content_key(item)) for item in items]
        new = list({key: i for i, key in enumerate(keys) if key not in self.full_width}.values())
        if new:
            self.full_width.update(zip((keys[i] for i in new), encode([items[i] for i in new], None)))
        full = np.stack([self.full_width[key] for key in keys])
        if self.truncate_dim is None:
            return full
        prefix = full[:, : self.truncate_dim]
        return prefix / np.maximum(np.linalg.norm(prefix, axis=1, keepdims=True), 1e-12)


def _content_key(item) -> str | tuple:
    """A text itself; an image by its pixels (mteb hands PIL images)."""
    if isinstance(item, str):
        return item
    return item.mode, item.size, hashlib.blake2b(item.tobytes(), digest_size=16).digest()


def _languages(directory: Path, pattern: str) -> list[str]:
    found = sorted(path.name.split(".")[0] for path in directory.glob(pattern))
    unknown = [code for code in found if code not in ISO]
    if unknown:
        raise ValueError(f"{directory}: no ISO code known for languages {unknown}")
    if not found:
        raise FileNotFoundError(f"{directory}: no {pattern} files")
    return found


def _metadata(name: str, task_type: str, main_score: str, languages: list[str], category: str, modalities):
    from mteb.abstasks.task_metadata import TaskMetadata

    return TaskMetadata(
        name=name,
        description=f"mmclip held-out {task_type} set (synthetic corpus), local files.",
        reference=None,
        dataset={"path": "local", "revision": "local"},
        type=task_type,
        category=category,
        eval_splits=["test"],
        eval_langs={code: [ISO[code]] for code in languages},
        main_score=main_score,
        date=("2026-01-01", "2026-12-31"),
        domains=[],
        task_subtypes=[],
        license="cc-by-4.0",
        annotations_creators="derived",
        dialect=[],
        modalities=modalities,
        sample_creation="created",
        bibtex_citation="",
    )


def _bind(task_class, root: Path, metadata):
    """An instance of a subclass of ``task_class`` bound to ``root`` (mteb reads metadata from the class)."""
    bound = type(task_class.__name__, (task_class,), {"root": root, "metadata": metadata})
    return bound()


def local_sts(root: str | Path, name: str = "SyntheticSTS"):
    root = Path(root)
    return _bind(
        LocalSTS, root, _metadata(name, "STS", "cosine_spearman", _languages(root, "*.jsonl"), "t2t", ["text"])
    )


def local_text_retrieval(root: str | Path, name: str = "SyntheticTextRetrieval"):
    root = Path(root)
    languages = sorted(path.name for path in root.iterdir() if (path / "corpus.jsonl").is_file())
    return _bind(LocalTextRetrieval, root, _metadata(name, "Retrieval", "ndcg_at_10", languages, "t2t", ["text"]))


class LocalSTS(AbsTaskSTS):
    """``{lang}.jsonl`` rows of ``sentence1``, ``sentence2``, ``score`` (0-5), one subset per language
    (build with :func:`local_sts`)."""

    min_score, max_score = 0, 5
    root: Path

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        from datasets import Dataset

        self.dataset = {}
        for code in self.hf_subsets:
            rows = [json.loads(line) for line in (self.root / f"{code}.jsonl").read_text(encoding="utf-8").splitlines()]
            self.dataset[code] = {"test": Dataset.from_list(rows)}
        self.data_loaded = True


class LocalTextRetrieval(AbsTaskRetrieval):
    """BEIR folders ``{lang}/corpus.jsonl, queries.jsonl, qrels/test.tsv``, one subset per language
    (build with :func:`local_text_retrieval`)."""

    # mteb's default ranks the top 1000 per query, half of a 2000-text held-out corpus, in Python
    # heaps: most of the demo's report time, for cut-offs no table reads. 100 keeps nDCG@10 exact.
    k_values = (1, 3, 5, 10, 20, 100)
    root: Path

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        from datasets import Dataset
        from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData

        self.dataset = {}
        for code in self.hf_subsets:
            corpus, queries, qrels = read_beir(self.root / code)
            self.dataset[code] = {
                "test": RetrievalSplitData(
                    corpus=Dataset.from_list(
                        [{"id": row["_id"], "title": row.get("title", ""), "text": row["text"]} for row in corpus]
                    ),
                    queries=Dataset.from_list([{"id": row["_id"], "text": row["text"]} for row in queries]),
                    relevant_docs=qrels,
                    top_ranked=None,
                )
            }
        self.data_loaded = True


def read_beir(directory: Path) -> tuple[list[dict], list[dict], dict[str, dict[str, int]]]:
    def jsonl(name):
        return [json.loads(line) for line in (directory / name).read_text(encoding="utf-8").splitlines() if line]

    qrels: dict[str, dict[str, int]] = {}
    for line in (directory / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        query_id, corpus_id, score = line.split("\t")
        qrels.setdefault(query_id, {})[corpus_id] = int(score)
    return jsonl("corpus.jsonl"), jsonl("queries.jsonl"), qrels


def write_vidore_dataset(documents: str | Path, work: str | Path) -> Path:
    """The BEIR document set as a local ViDoRe-format dataset (``datasets.load_dataset`` configs
    ``corpus`` / ``queries`` / ``qrels``, split ``test``, page images embedded as bytes), in
    ``work/vidore-<fingerprint of the set>``; that folder.

    ``datasets`` caches a local folder's dataset under the folder's name alone, in the user's cache:
    a fixed name read the pages and queries of whichever set was loaded under it first. The name
    carries the content, so a set is read from the cache only by a run of the same set.
    """
    from datasets import Dataset, Features, Image, Value

    documents = Path(documents)
    corpus, queries, qrels = read_beir(documents)
    pages = [(documents / row["image"]).read_bytes() for row in corpus]
    fingerprint = hashlib.blake2b(digest_size=8)
    for part in (documents / "corpus.jsonl", documents / "queries.jsonl", documents / "qrels" / "test.tsv"):
        fingerprint.update(part.read_bytes())
    for page in pages:
        fingerprint.update(page)
    output = Path(work) / f"vidore-{fingerprint.hexdigest()}"
    for name in ("corpus", "queries", "qrels"):
        (output / name).mkdir(parents=True, exist_ok=True)
    Dataset.from_dict(
        {
            "corpus-id": [row["_id"] for row in corpus],
            "image": [{"bytes": page, "path": None} for page in pages],
        },
        features=Features({"corpus-id": Value("string"), "image": Image()}),
    ).to_parquet(str(output / "corpus" / "test.parquet"))
    Dataset.from_dict(
        {"query-id": [row["_id"] for row in queries], "query": [row["text"] for row in queries]}
    ).to_parquet(str(output / "queries" / "test.parquet"))
    pairs = [(q, c, s) for q, docs in qrels.items() for c, s in docs.items()]
    Dataset.from_dict(
        {"query-id": [p[0] for p in pairs], "corpus-id": [p[1] for p in pairs], "score": [p[2] for p in pairs]}
    ).to_parquet(str(output / "qrels" / "test.parquet"))
    configs = "\n".join(
        f"- config_name: {name}\n  data_files:\n  - split: test\n    path: {name}/test.parquet"
        for name in ("corpus", "queries", "qrels")
    )
    (output / "README.md").write_text(f"---\nconfigs:\n{configs}\n---\nViDoRe-format copy of {documents}.\n")
    return output


def vidore_task(dataset_dir: str | Path, name: str = "SyntheticDocumentsViDoRe"):
    """mteb's ViDoRe v1 task class on a local ViDoRe-format dataset (its loader and nDCG@5)."""
    from mteb.tasks.retrieval.eng.vidore_bench_retrieval import VidoreArxivQARetrieval

    metadata = VidoreArxivQARetrieval.metadata.model_copy(
        update={
            "name": name,
            "dataset": {"path": str(Path(dataset_dir).resolve()), "revision": "local"},
            "description": f"ViDoRe-format page retrieval on {dataset_dir}",
        }
    )
    return _bind(VidoreArxivQARetrieval, Path(dataset_dir), metadata)


# Local tasks by name: the held-out set's folder under --data and how to build the task from it.
LOCAL_TASKS = {
    "SyntheticSTS": ("sts", lambda root, work: local_sts(root)),
    "SyntheticTextRetrieval": ("text_retrieval", lambda root, work: local_text_retrieval(root)),
    "SyntheticDocumentsViDoRe": ("documents", lambda root, work: vidore_task(write_vidore_dataset(root, work))),
}


def resolve_tasks(names: list[str], languages: list[str] | None, data: str | Path | None, work: Path) -> list:
    """mteb tasks by name: the local ones (:data:`LOCAL_TASKS`) from ``data``, any other through
    ``mteb.get_tasks`` (which downloads); ``languages`` (ISO 639-3, e.g. ``deu``) filters both."""
    import mteb

    local = [name for name in names if name in LOCAL_TASKS]
    tasks = []
    for name in local:
        folder, build = LOCAL_TASKS[name]
        if data is None or not (Path(data) / folder).is_dir():
            raise FileNotFoundError(f"task {name} reads {folder}/ under --data; got {data}")
        task = build(Path(data) / folder, work)
        tasks.append(task.filter_languages(languages) if languages else task)
    others = [name for name in names if name not in LOCAL_TASKS]
    if others:
        tasks += mteb.get_tasks(tasks=others, languages=languages)
    return tasks


def run_mteb(model_dir: str | Path, tasks: list, output: str | Path, truncate_dim: int | None = None):
    """``mteb.evaluate`` on the export's own ModelMeta with mteb's result cache in ``output``: mteb's
    result files, ``output/results/<model>/<revision>/<task>.json`` and ``model_meta.json``."""
    import mteb
    from mteb.cache import ResultCache

    meta = load_model_meta(model_dir, truncate_dim)
    return mteb.evaluate(meta, tasks, cache=ResultCache(output), show_progress_bar=False)


def run_tasks(encoder: MMCLIPEncoder, tasks: list) -> dict[str, dict[str, float]]:
    """``{task name: {subset: main score}}`` from ``mteb.evaluate`` (no result cache: every run is fresh)."""
    import mteb

    results = mteb.evaluate(encoder, tasks, cache=None, show_progress_bar=False)
    scores = {}
    for task_result in results.task_results:
        scores[task_result.task_name] = {
            entry["hf_subset"]: float(entry["main_score"]) for entry in task_result.scores["test"]
        }
    return scores
