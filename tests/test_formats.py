"""The shard format: records survive encode -> tar -> decode; bad samples name their reason."""

import json

import pytest
import webdataset as wds

from mmclip.data.formats import BadSample, ImageText, TextPair, TextTriplet, decode, encode
from mmclip.data.shards import ShardSetWriter, read_shard_set

RECORDS = [
    ImageText("img-0", b"\xff\xd8\xff\xe0jpeg", "jpg", "a red cube", "en", "test", "short", 4, 3, {"scene": 1}),
    TextPair("pair-0", "красный куб", "a red cube", "ru", "test", "translation"),
    TextTriplet("tri-0", "红色立方体", "红色立方体在左边", [f"neg {i}" for i in range(7)], "zh", "test", {"a": [1]}),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.kind)
def test_records_round_trip_through_a_shard_set(tmp_path, record):
    with ShardSetWriter(tmp_path, record.kind, max_samples=2) as writer:
        for i in range(5):
            writer.write(type(record)(**{**vars(record), "key": f"{record.key}-{i}"}))
        writer.skip("bad-1", "empty_text", "caption is blank")
    shard_set = read_shard_set(tmp_path)
    assert shard_set.kind == record.kind and shard_set.counts == (2, 2, 1) and shard_set.total == 5
    samples = list(wds.WebDataset([str(p) for p in shard_set.shards], shardshuffle=False))
    decoded = [decode(record.kind, sample) for sample in samples]
    assert [r.key for r in decoded] == [f"{record.key}-{i}" for i in range(5)]
    assert vars(decoded[0]) == {**vars(record), "key": f"{record.key}-0"}
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["version"] == 1 and manifest["skipped"] == {"empty_text": 1}
    assert json.loads((tmp_path / "sizes.json").read_text()) == dict(zip([p.name for p in shard_set.shards], (2, 2, 1)))
    assert json.loads((tmp_path / "skipped.jsonl").read_text())["reason"] == "empty_text"


@pytest.mark.parametrize(
    "kind, edit, reason",
    [
        ("image_text", lambda s: s.pop("jpg"), "missing_image"),
        ("image_text", lambda s: s.update(jpg=b""), "empty_image"),
        ("image_text", lambda s: s.update(txt=b"\xff\xfe caption"), "non_utf8_text"),
        ("image_text", lambda s: s.update(txt=b"   "), "empty_text"),
        ("image_text", lambda s: s.update(json=b"{not json"), "bad_json"),
        ("image_text", lambda s: s.update(json=b"[1]"), "bad_metadata"),
        ("text_pair", lambda s: s.pop("positive.txt"), "missing_field"),
        ("text_triplet", lambda s: s.update({"negatives.json": b'["a", ""]'}), "bad_negatives"),
    ],
)
def test_bad_samples_raise_with_their_reason(kind, edit, reason):
    sample = encode(next(r for r in RECORDS if r.kind == kind))
    edit(sample)
    with pytest.raises(BadSample) as error:
        decode(kind, sample)
    assert error.value.reason == reason


def test_writer_refuses_to_mix_kinds_or_overwrite(tmp_path):
    with ShardSetWriter(tmp_path / "a", "text_pair") as writer:
        with pytest.raises(ValueError, match="a image_text record in a text_pair shard set"):
            writer.write(RECORDS[0])
        writer.write(RECORDS[1])
    with pytest.raises(FileExistsError, match="already holds shards"):
        ShardSetWriter(tmp_path / "a", "text_pair")


def test_manifest_of_another_version_is_refused(tmp_path):
    with ShardSetWriter(tmp_path, "text_pair") as writer:
        writer.write(RECORDS[1])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(ValueError, match="version 99"):
        read_shard_set(tmp_path)


def test_a_failed_build_leaves_no_manifest(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardSetWriter(tmp_path, "text_pair", max_samples=1) as writer:
            writer.write(RECORDS[1])
            writer.write(RECORDS[1])
            raise RuntimeError("source went away")
    assert not (tmp_path / "manifest.json").exists()
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        read_shard_set(tmp_path)
