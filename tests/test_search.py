"""`mmclip search`: index, query and serve over an exported model, end to end; the page in Chromium."""

import json
import logging
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from PIL import Image

from data_pipelines.synthetic import Plan, generate
from data_pipelines.synthetic.eval_sets import eval_image
from data_pipelines.synthetic.languages import GRAMMARS
from data_pipelines.synthetic.render import render_scene
from data_pipelines.synthetic.samples import Context
from data_pipelines.synthetic.scenes import COLOURS, Group, Scene
from mmclip.demo import clip as demo
from mmclip.cli import main
from mmclip.export import export
from mmclip.search import SearchError, SearchIndex, load_model, query, search
from mmclip.search.server import make_server
from mmclip.train import train

from .test_export import make_checkpoint

LANGUAGES = ("en", "de", "fr", "zh", "ru")
HELD_OUT_IMAGES = 20


def scene(colour, shape="star"):
    return Scene((Group(shape, colour, "large", 1),), "centre", width=96, height=80)


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """An exported model, a folder of synthetic scenes (one per colour, one nested), a broken file and
    a symlink out of the folder."""
    root = tmp_path_factory.mktemp("search")
    checkpoint, _ = make_checkpoint(root)
    export(checkpoint, root / "hf")
    images = root / "images"
    (images / "nested").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, colour in enumerate(COLOURS[:6]):
        folder = images / "nested" if i == 5 else images
        render_scene(scene(colour), rng).save(folder / f"{colour}.{'png' if i % 2 else 'jpg'}")
    (images / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (root / "secret.png").write_bytes((images / "red.jpg").read_bytes())
    os.symlink(root / "secret.png", images / "link.png")
    return root


def indexed(root, name="index", *args):
    output = root / name
    if not output.exists():
        assert (
            main(
                [
                    "search",
                    "index",
                    str(root / "hf"),
                    "--images",
                    str(root / "images"),
                    "--output",
                    str(output),
                    "--quiet",
                    *args,
                ]
            )
            == 0
        )
    return output


def test_index_skips_broken_files_and_symlinks_out(collection, capsys):
    shutil.rmtree(collection / "index", ignore_errors=True)
    indexed(collection)
    out = capsys.readouterr().out
    assert "added 6, 6 items in all (flat, 64-d); skipped 2" in out
    assert "broken.jpg: UnidentifiedImageError" in out and "link.png: symlink out of" in out
    index = SearchIndex.load(collection / "index")
    assert sorted(os.path.basename(item["path"]) for item in index.items) == sorted(
        f"{c}.{'png' if i % 2 else 'jpg'}" for i, c in enumerate(COLOURS[:6])
    )


def test_symlinks_to_an_indexed_image_index_it_once(collection, capsys):
    folder = collection / "aliases"
    (folder / "nested").mkdir(parents=True)
    shutil.copy(collection / "images" / "red.jpg", folder / "red.jpg")
    os.symlink(folder / "red.jpg", folder / "alias.jpg")
    os.symlink("../red.jpg", folder / "nested" / "again.jpg")
    argv = ["search", "index", str(collection / "hf"), "--images", str(folder), "--output", str(collection / "dedup")]
    for expected in ("added 1, 1 items in all", "added 0, 1 items in all"):  # a second run: nothing new either
        capsys.readouterr()
        assert main([*argv, "--quiet"]) == 0
        assert expected in capsys.readouterr().out
    assert [item["path"] for item in SearchIndex.load(collection / "dedup").items] == [str(folder / "red.jpg")]


def test_queries_rank_exactly_by_cosine_in_every_language(collection, capsys):
    index_dir = indexed(collection)
    model = load_model(collection / "hf")
    index = SearchIndex.load(index_dir)
    paths = [item["path"] for item in index.items]
    image_vectors = model.encode_image(paths)
    for language in LANGUAGES:
        caption = GRAMMARS[language].caption(scene("red"), 1)
        capsys.readouterr()
        assert main(["search", "query", str(index_dir), caption, "--k", "4", "--json"]) == 0
        hits = json.loads(capsys.readouterr().out)
        expected = image_vectors @ model.encode_text(caption)
        assert [hit["path"] for hit in hits] == [paths[i] for i in np.argsort(-expected)[:4]]
        np.testing.assert_allclose([hit["score"] for hit in hits], np.sort(expected)[::-1][:4], atol=1e-5)
    # An indexed image finds itself first, at cosine 1.
    capsys.readouterr()
    assert main(["search", "query", str(index_dir), "--image", paths[3], "--k", "2", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["path"] == paths[3] and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)


def test_adding_embeds_only_new_files(collection, capsys):
    index_dir = indexed(collection, "incremental")
    (collection / "images" / "nested" / "extra.png").write_bytes((collection / "images" / "green.png").read_bytes())
    texts = collection / "texts.txt"
    texts.write_text("ein roter Stern\n\n一个绿色的星星\n", encoding="utf-8")
    argv = ["search", "index", str(collection / "hf"), "--images", str(collection / "images"), "--texts", str(texts)]
    try:
        # The first run adds one image and two texts; the second finds nothing new.
        for expected in ("added 3, 9 items in all", "added 0, 9 items in all"):
            capsys.readouterr()
            assert main([*argv, "--output", str(index_dir), "--quiet"]) == 0
            assert expected in capsys.readouterr().out
        hits = query(index_dir, text="ein roter Stern", k=9)
        assert {hit["type"] for hit in hits} == {"image", "text"}
        assert next(hit for hit in hits if hit["type"] == "text")["text"] == "ein roter Stern"  # itself, cosine 1
    finally:
        (collection / "images" / "nested" / "extra.png").unlink()


def test_bad_queries_and_mismatched_indexes_are_clear_errors(collection, capsys):
    index_dir = indexed(collection)
    cases = [
        (["search", "query", str(index_dir), "   "], "empty query"),
        (["search", "query", str(index_dir), "x" * 1001], "query too long: 1001 characters"),
        (["search", "query", str(index_dir), "red", "--k", "0"], "k must be between 1 and 1000"),
        (["search", "query", str(index_dir), "red", "--truncate-dim", "32"], "the index holds 64-d embeddings"),
        (
            [
                "search",
                "index",
                str(collection / "hf"),
                "--images",
                str(collection / "images"),
                "--output",
                str(index_dir),
                "--truncate-dim",
                "16",
            ],
            "the index holds 64-d embeddings",
        ),
        (["search", "query", str(collection), "red"], "not a search index (no meta.json)"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        assert message in capsys.readouterr().err
    other = collection / "hf_bf16"
    if not other.exists():
        export(collection / "ckpt", other, dtype="bf16")
    with pytest.raises(SearchError, match="is another model"):
        query(index_dir, text="red", model_dir=other)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_agree_with_exact_search_on_a_small_set(collection, kind):
    exact, approximate = indexed(collection), indexed(collection, f"index_{kind}", "--kind", kind)
    assert SearchIndex.load(approximate).kind == kind
    for colour in COLOURS[:3]:
        caption = GRAMMARS["en"].caption(scene(colour), 0)
        assert query(approximate, text=caption, k=1)[0]["path"] == query(exact, text=caption, k=1)[0]["path"]


@pytest.fixture(scope="module")
def server(collection):
    index_dir = indexed(collection)
    server = make_server(index_dir, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def fetch(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_server_answers_and_serves_only_indexed_files(server, collection):
    server, base = server
    assert server.server_address[0] == "127.0.0.1"
    status, body = fetch(f"{base}/api/search?q={quote('ein roter Stern')}&k=3")
    assert status == 200 and len(json.loads(body)["results"]) == 3

    for url, code in [
        (f"{base}/api/search?q=", 400),
        (f"{base}/api/search?q={'x' * 1001}", 400),
        (f"{base}/api/search?q=red&k=101", 400),
        (f"{base}/api/search?q=red&k=two", 400),
        (f"{base}/file?id=999", 403),
        (f"{base}/file?id=-1", 403),
        (f"{base}/file?id=../../etc/passwd", 400),
        (f"{base}/file?path=/etc/passwd", 400),
        (f"{base}/../../etc/passwd", 404),
        (f"{base}/{collection}/secret.png", 404),
    ]:
        assert fetch(url)[0] == code, url

    first = server.index.items[0]["path"]
    original = Path(first).read_bytes()
    assert fetch(f"{base}/file?id=0") == (200, original)
    # An indexed file later replaced by a symlink out of the indexed folder is refused.
    os.replace(first, first + ".bak")
    os.symlink(collection / "secret.png", first)
    try:
        assert fetch(f"{base}/file?id=0")[0] == 403
    finally:
        os.unlink(first)
        os.replace(first + ".bak", first)
    assert fetch(f"{base}/file?id=0") == (200, original)


def test_a_client_gone_early_is_one_log_line(server, caplog, capsys):
    """A client that resets the connection before its answer: the server logs one line, no traceback."""
    server, base = server
    caplog.set_level(logging.INFO, logger="mmclip.search.server")
    for _ in range(20):  # until one reset lands before the answer is written (a query takes a forward pass)
        with socket.create_connection(server.server_address[:2]) as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
            client.sendall(f"GET /api/search?q={quote('ein roter Stern')}&k=6 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        time.sleep(0.2)
        if any("disconnected" in record.getMessage() for record in caplog.records):
            break
    lines = [record.getMessage() for record in caplog.records if "disconnected" in record.getMessage()]
    assert lines and all("ConnectionResetError" in line or "BrokenPipeError" in line for line in lines)
    assert "Traceback" not in capsys.readouterr().err
    assert fetch(f"{base}/api/search?q=red&k=1")[0] == 200  # and it still serves


@pytest.fixture(scope="session")
def chromium():
    """The Debian ``chromium`` browser, installed here if missing (as ``make browser`` does)."""
    path = shutil.which("chromium")
    if path is None:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, capture_output=True, env=env)
        path = shutil.which("chromium")
    assert path, "chromium could not be installed"
    return path


def test_web_page_answers_a_query_in_headless_chromium(server, chromium, tmp_path):
    server, base = server
    caption = GRAMMARS["de"].caption(scene("blue"), 0)
    expected = query(server.index_dir, text=caption, k=3)
    url = f"{base}/?q={quote(caption)}&k=3"
    flags = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--virtual-time-budget=20000",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True).stdout
    assert 'data-done="1"' in dom, dom[-2000:]
    sources = [part.split('"')[0] for part in dom.split('src="/file?id=')[1:]]
    assert sources == [str(hit["id"]) for hit in expected]
    assert os.path.basename(expected[0]["path"]) in dom

    screenshot = tmp_path / "page.png"
    subprocess.run(
        [*flags, f"--screenshot={screenshot}", "--window-size=900,600", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = np.asarray(Image.open(screenshot).convert("RGB"))
    assert pixels.shape == (600, 900, 3)
    # The thumbnails are drawn: some pixels carry the scenes' saturated colours, not just page greys.
    assert (pixels.max(-1).astype(int) - pixels.min(-1)).max() > 100


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """A model trained here for the purpose, exported, and an index of the first held-out images of
    its corpus: the eval stream, which no training sample is drawn from.

    The demo's stage-1 config, shortened to 400 steps at 48 px on a scenes-only corpus of 64 px
    images (weights do not belong in git, and the demo's own 9 minutes do not fit the suite):
    about 2 minutes on 2 cores.
    """
    root = tmp_path_factory.mktemp("held_out")
    generate(root / "data", Plan.parse("4000"), workers=2, image_side=64, document_every=0)
    overrides = demo._stage_overrides("stage1", root, None)
    overrides += ["steps=400", "data.image_size=48", 'clip.resolution_schedule=[{"step": 0, "image_size": 48}]']
    checkpoint = train(demo.CONFIG_DIR / "stage1.yaml", root / "run", overrides)
    assert main(["export", str(checkpoint), "--output", str(root / "hf")]) == 0
    corpus = json.loads((root / "data" / "corpus.json").read_text())
    ctx = Context(corpus["seed"], tuple(corpus["languages"]), corpus["image_side"])
    (root / "images").mkdir()
    captions = []
    for i in range(HELD_OUT_IMAGES):
        jpeg, by_language = eval_image(ctx, i)
        (root / "images" / f"held_out_{i:02d}.jpg").write_bytes(jpeg)
        captions.append(by_language)
    index = ["search", "index", str(root / "hf"), "--images", str(root / "images"), "--output", str(root / "index")]
    assert main([*index, "--quiet"]) == 0
    return root, captions


@pytest.mark.slow
def test_search_finds_held_out_images_from_captions_in_every_language(held_out, capsys):
    root, captions = held_out
    index, model = SearchIndex.load(root / "index"), load_model(root / "hf")
    found, firsts = {}, {}
    for language in captions[0]:
        firsts[language] = [Path(search(index, model, text=c[language], k=1)[0]["path"]).name for c in captions]
        found[language] = sum(name == f"held_out_{i:02d}.jpg" for i, name in enumerate(firsts[language]))
    # Chance is 1 in 20. Measured: 16-18 of 20 per language, 154 of 180 in all.
    assert all(count >= 13 for count in found.values()), found
    assert sum(found.values()) >= 0.75 * HELD_OUT_IMAGES * len(found), found

    # The command line answers the same: a Chinese caption of image 3.
    assert main(["search", "query", str(root / "index"), captions[3]["zh"], "--k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert Path(hits[0]["path"]).name == firsts["zh"][3] and len(hits) == 3
