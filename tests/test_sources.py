"""Shard sources beyond mmclip's shard sets: plain tar folders, brace patterns, ``file://``, loopback
http and ``pipe:curl`` URLs; their counts (manifest, sizes.json, img2dataset stats, cached counting
pass), field mapping, and for pattern and URL sources exact resume, disjoint rank/worker splits
(strided when there are fewer tars than workers) and seeded resampling."""

import json
import os
import shutil

import numpy as np
import pytest
import webdataset as wds

from mmclip.data.shards import ShardSourceError
from mmclip.data import MultiStreamLoader, StreamDataset
from mmclip.data.sources import SourceError, resolve

from .loopback import serve
from .test_loader import (  # noqa: F401  (tokenizer, tokenizer_dir: fixtures)
    caption,
    encode_image,
    make_config,
    one_epoch,
    smooth_image,
    tokenizer,
    tokenizer_dir,
    write_text_pairs,
)

assert shutil.which("curl"), "pipe:curl and http sources need curl (make test installs it)"

PAIRS, PER_TAR = 15, 3  # five tars


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """One mmclip shard set of text pairs, and its tars again as a plain folder (no manifest)."""
    root = tmp_path_factory.mktemp("sources")
    write_text_pairs(root / "set", PAIRS, max_samples=PER_TAR)
    (root / "plain").mkdir()
    for tar in sorted((root / "set").glob("*.tar")):
        shutil.copy(tar, root / "plain" / tar.name)
    return root


@pytest.fixture(scope="module")
def http(corpus):
    with serve(corpus) as url:
        yield url


PATTERN = "text_pair-{000000..000004}.tar"


def specs(corpus, http):
    return {
        "shard set": str(corpus / "set"),
        "plain folder": str(corpus / "plain"),
        "one tar": str(corpus / "plain" / "text_pair-000002.tar"),
        "pattern": f"{corpus}/plain/{PATTERN}",
        "file://": f"file://{corpus}/plain/{PATTERN}",
        "http pattern": f"{http}/plain/{PATTERN}",
        "http folder": f"{http}/set",  # listed by its manifest
        "pipe:curl": f"pipe:curl -s -f {http}/plain/{PATTERN}",
    }


def stream(shards, cache, batch_size=2, **fields):
    return {"kind": "text_pair", "shards": shards, "batch_size": batch_size, **fields}


def keys_of(batches):
    return [key for batch in batches for key in batch["keys"]]


def test_every_source_kind_yields_its_samples_with_their_counts(corpus, http, tokenizer, tmp_path):
    everything = sorted(f"pair{i:04d}" for i in range(PAIRS))
    for name, spec in specs(corpus, http).items():
        source = resolve(spec, tmp_path / "cache")
        if name == "one tar":
            assert source.counts == (PER_TAR,)
            continue
        assert source.counts == (PER_TAR,) * 5 and source.total == PAIRS, name
        config = make_config({"p": stream([spec], tmp_path)}, num_workers=2, index_cache=str(tmp_path / "cache"))
        assert sorted(keys_of(one_epoch(config, "p", tokenizer))) == everything, name
    assert resolve(str(corpus / "set"), tmp_path).kind == "text_pair"
    assert resolve(f"{corpus}/set/{PATTERN}", tmp_path).kind == "text_pair"  # the folder's manifest
    assert resolve(f"{corpus}/plain/{PATTERN}", tmp_path).kind is None  # plain tars: the stream says


def test_counts_come_from_sizes_json_stats_or_a_cached_counting_pass(corpus, tmp_path):
    tars = sorted((corpus / "plain").glob("*.tar"))
    sized = tmp_path / "sized"
    sized.mkdir()
    for tar in tars:
        shutil.copy(tar, sized / tar.name)
    # sizes.json wins over a stats file (and both are believed: here they disagree with the tars on purpose)
    (sized / "sizes.json").write_text(json.dumps({tar.name: 7 for tar in tars}))
    (sized / f"{tars[0].stem}_stats.json").write_text(json.dumps({"successes": 2}))
    assert resolve(str(sized), tmp_path / "cache").counts == (7,) * 5
    (sized / "sizes.json").unlink()
    assert resolve(str(sized), tmp_path / "cache").counts == (2,) + (PER_TAR,) * 4

    cache = tmp_path / "counted"
    assert resolve(str(corpus / "plain"), cache).counts == (PER_TAR,) * 5
    (index,) = cache.glob("*.json")  # written outside the source
    assert not any(p.suffix == ".json" for p in (corpus / "plain").iterdir())
    entries = json.loads(index.read_text())
    entries["shards"][str(tars[1])]["count"] = 99  # reused as it is: nothing is counted again
    index.write_text(json.dumps(entries))
    assert resolve(str(corpus / "plain"), cache).counts == (PER_TAR, 99, PER_TAR, PER_TAR, PER_TAR)
    os.utime(tars[1], ns=(1, 1))  # a rewritten tar (new mtime) is counted again
    assert resolve(str(corpus / "plain"), cache).counts == (PER_TAR,) * 5


def test_missing_sources_are_one_line_data_errors(corpus, tmp_path):
    for spec, message in [
        (str(tmp_path / "nothing"), "no such file or directory"),
        (str(tmp_path), "no tar files there"),
        (str(tmp_path / "x.tar"), "no such file"),
        ("nosuchfs://bucket/{0..2}.tar", "fsspec cannot open nosuchfs://"),
    ]:
        with pytest.raises(SourceError, match=message) as error:
            resolve(spec, tmp_path)
        assert isinstance(error.value, ShardSourceError) and "\n" not in str(error.value)


@pytest.mark.parametrize("kind", ["pattern", "http pattern", "pipe:curl"])
def test_ranks_and_workers_split_pattern_and_url_sources_disjointly(corpus, http, tokenizer, tmp_path, kind):
    spec = specs(corpus, http)[kind]
    # Three tars for 2 ranks x 2 workers: each tar is split into strided slices.
    three = spec.replace("{000000..000004}", "{000000..000002}")
    for tars, shards in ((5, spec), (3, three)):
        config = make_config({"p": stream([shards], tmp_path)}, num_workers=2, index_cache=str(tmp_path))
        per_worker = [
            keys_of(StreamDataset(config, "p", tokenizer, rank=rank, world_size=2, epochs=1).batches(worker))
            for rank in range(2)
            for worker in range(2)
        ]
        assert all(per_worker), tars
        every = [key for keys in per_worker for key in keys]
        assert sorted(every) == [f"pair{i:04d}" for i in range(tars * PER_TAR)]  # each sample exactly once


@pytest.mark.parametrize("kind", ["pattern", "http pattern"])
def test_pattern_and_url_sources_resume_exactly(corpus, http, tokenizer, tmp_path, kind):
    config = make_config(
        {"p": stream([specs(corpus, http)[kind]], tmp_path, batch_size=4)},
        num_workers=2,
        shuffle_block=5,  # steps cross blocks, tars and epochs
        index_cache=str(tmp_path),
    )
    steps = iter(MultiStreamLoader(config, tokenizer))
    expected = [next(steps)["p"]["keys"] for _ in range(14)]
    del steps
    first = MultiStreamLoader(config, tokenizer)
    steps = iter(first)
    seen = [next(steps)["p"]["keys"] for _ in range(5)]
    state = json.loads(json.dumps(first.state_dict()))
    del steps
    resumed = MultiStreamLoader(config, tokenizer)
    resumed.load_state_dict(state)
    steps = iter(resumed)
    assert seen + [next(steps)["p"]["keys"] for _ in range(9)] == expected


def test_a_source_that_changed_is_another_layout(corpus, tokenizer, tmp_path):
    folder = tmp_path / "grows"
    shutil.copytree(corpus / "plain", folder)
    config = make_config({"p": stream([str(folder)], tmp_path)}, index_cache=str(tmp_path))
    state = MultiStreamLoader(config, tokenizer).state_dict()
    shutil.copy(folder / "text_pair-000000.tar", folder / "text_pair-000009.tar")
    with pytest.raises(ValueError, match=r"streams.p.tars was \[5\], is \[6\]"):
        MultiStreamLoader(config, tokenizer).load_state_dict(state)


def test_resampling_draws_plain_tars_seeded_per_worker(corpus, http, tokenizer, tmp_path):
    config = make_config(
        {"p": stream([specs(corpus, http)["http pattern"]], tmp_path, batch_size=15)},
        resampled=True,
        num_workers=2,
        index_cache=str(tmp_path),
    )

    def draws(worker):
        return next(StreamDataset(config, "p", tokenizer, rank=1, world_size=2).batches(worker))["keys"]

    assert draws(0) == draws(0) and draws(0) != draws(1)
    assert len(set(draws(0))) < 15  # five tars drawn with replacement from five: some twice


def test_fields_map_foreign_layouts(tmp_path, tokenizer):
    """JSON-only text pairs and triplets (MS MARCO-like), and image-text with the caption in JSON,
    ``.jpeg`` / ``.webp`` images and identified languages."""
    (tmp_path / "pairs").mkdir()
    with wds.TarWriter(str(tmp_path / "pairs" / "00000.tar")) as tar:
        for i in range(4):
            row = {"q": caption(i), "pos": [caption(i + 1), "ignored"], "negs": [caption(i + 2 + j) for j in range(7)]}
            tar.write({"__key__": f"row{i}", "json": json.dumps(row).encode()})
        tar.write({"__key__": "row4", "json": json.dumps({"q": caption(4)}).encode()})  # no positive
    fields = {"query": "json:q", "positive": "json:pos", "negatives": "json:negs", "language": "identify"}
    for kind in ("text_pair", "text_triplet"):
        spec = {"kind": kind, "shards": [str(tmp_path / "pairs")], "batch_size": 2, "fields": fields}
        if kind == "text_pair":
            spec["fields"] = {k: v for k, v in fields.items() if k != "negatives"}
        dataset = StreamDataset(make_config({"t": spec}, index_cache=str(tmp_path)), "t", tokenizer, epochs=1)
        batches = list(dataset.batches(0))
        assert sorted(keys_of(batches)) == [f"row{i}" for i in range(4)]
        assert batches[-1]["_progress"]["skipped"] == {"missing_field": 1}

    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    captions = ["a red cube on a blue table next to a ball", "ein roter Würfel auf einem blauen Tisch"]
    with wds.TarWriter(str(tmp_path / "images" / "00000.tar")) as tar:
        for i, ext in enumerate(["jpeg", "webp"]):
            image = encode_image(smooth_image(rng, 40, 40), "jpg" if ext == "jpeg" else ext)
            tar.write({"__key__": f"im{i}", ext: image, "json": json.dumps({"caption_en": captions[i]}).encode()})
    spec = {
        "kind": "image_text",
        "shards": [str(tmp_path / "images" / "00000.tar")],
        "batch_size": 2,
        "fields": {"caption": "json:caption_en", "language": "identify", "image": ["webp", "jpeg"]},
    }
    dataset = StreamDataset(make_config({"m": spec}, index_cache=str(tmp_path)), "m", tokenizer, epochs=1)
    (batch,) = dataset.batches(0)
    assert sorted(batch["keys"]) == ["im0", "im1"] and batch["pixel_values"].shape == (2, 3, 32, 32)
    mapped = dataset.fields({"__key__": "x", "jpeg": b"1", "json": json.dumps({"caption_en": captions[1]}).encode()})
    assert mapped == {"__key__": "x", "txt": captions[1].encode(), "jpg": b"1", "json": b'{"language": "de"}'}


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"caption": "json:"}, "fields.caption: a member extension"),
        ({"query": "txt"}, "fields.query: not a field of image_text"),
        ({"language": "guess"}, "fields.language: json:KEY, identify or null"),
    ],
)
def test_bad_field_mappings_name_the_key(tmp_path, fields, message):
    with pytest.raises(ValueError, match=message):
        make_config({"m": {"kind": "image_text", "shards": [str(tmp_path)], "batch_size": 2, "fields": fields}})


def test_a_url_that_cannot_be_fetched_fails_before_training_and_is_not_cached(http, tmp_path):
    for spec in (f"{http}/plain/gone-{{0..1}}.tar", f"pipe:curl -s -f {http}/plain/gone-{{0..1}}.tar"):
        with pytest.raises(SourceError, match="cannot count samples: .*gone-0.tar"):
            resolve(spec, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
