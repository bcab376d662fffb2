"""``mmclip search serve INDEX``: a small web page with a search box and thumbnails (stdlib HTTP).

Routes: ``/`` the page (``/?q=...`` searches on load), ``/api/search?q=...&k=...`` JSON results,
``/file?id=N`` the N-th indexed image. Files are addressed by their id in the index, never by a
path from the request, and each is re-checked on every request: it must still resolve inside one
of the indexed folders, so a symlink (or a file later replaced by one) leading out is refused.
Listens on 127.0.0.1 unless told otherwise; query length and ``k`` are bounded.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from . import MAX_QUERY_CHARS, SearchError, SearchIndex, search

logger = logging.getLogger(__name__)

MAX_SERVE_K = 100

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mmclip search</title>
<style>
body { font-family: sans-serif; margin: 2em; }
#results { display: flex; flex-wrap: wrap; gap: 12px; margin-top: 1em; }
.hit { width: 160px; font-size: 12px; word-break: break-all; }
.hit img { width: 160px; height: 160px; object-fit: cover; display: block; }
#error { color: #b00; }
</style></head>
<body>
<h1>mmclip search</h1>
<form id="form"><input id="q" name="q" size="60" maxlength="MAX_CHARS" placeholder="search in any language" autofocus>
<input id="k" name="k" type="number" min="1" max="MAX_K" value="12"> <button>Search</button></form>
<div id="error"></div><div id="results"></div>
<script>
async function run(q, k) {
  const results = document.getElementById("results"), error = document.getElementById("error");
  results.innerHTML = ""; error.textContent = "";
  const response = await fetch("/api/search?" + new URLSearchParams({q: q, k: k}));
  const data = await response.json();
  if (!response.ok) { error.textContent = data.error; return; }
  for (const hit of data.results) {
    const div = document.createElement("div");
    div.className = "hit"; div.dataset.rank = hit.rank;
    if (hit.type === "image") {
      const img = document.createElement("img");
      img.src = "/file?id=" + hit.id; img.alt = hit.path; div.appendChild(img);
    }
    const caption = document.createElement("div");
    caption.className = "caption";
    caption.textContent = hit.rank + ". " + (hit.type === "image" ? hit.path.split("/").pop() : hit.text) +
      " (" + hit.score.toFixed(3) + ")";
    div.appendChild(caption); results.appendChild(div);
  }
  document.body.dataset.done = "1";
}
document.getElementById("form").addEventListener("submit", (event) => {
  event.preventDefault();
  const q = document.getElementById("q").value, k = document.getElementById("k").value;
  history.replaceState(null, "", "/?" + new URLSearchParams({q: q, k: k}));
  run(q, k);
});
const params = new URLSearchParams(location.search);
if (params.get("q")) {
  document.getElementById("q").value = params.get("q");
  document.getElementById("k").value = params.get("k") || 12;
  run(params.get("q"), params.get("k") || 12);
}
</script></body></html>
""".replace("MAX_CHARS", str(MAX_QUERY_CHARS)).replace("MAX_K", str(MAX_SERVE_K))


class SearchServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], index: SearchIndex, model):
        super().__init__(address, SearchHandler)
        self.index, self.model = index, model
        self.roots = [Path(root).resolve() for root in index.roots]
        self.model_lock = threading.Lock()  # one forward at a time: torch already uses every core

    def handle_error(self, request, client_address) -> None:
        """A client gone before its answer is sent is routine (a closed tab): one line, no traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            logger.info("%s disconnected before the answer was sent (%s)", client_address[0], type(error).__name__)
        else:
            super().handle_error(request, client_address)

    def allowed_file(self, item_id: int) -> Path | None:
        """The image with this id, if the index holds it and it still resolves inside an indexed folder."""
        if not 0 <= item_id < len(self.index.items) or self.index.items[item_id]["type"] != "image":
            return None
        path = Path(self.index.items[item_id]["path"])
        resolved = path.resolve()
        if not resolved.is_file() or not any(resolved.is_relative_to(root) for root in self.roots):
            return None
        return resolved


class SearchHandler(BaseHTTPRequestHandler):
    server: SearchServer

    def log_message(self, format: str, *args) -> None:
        logger.info("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        params = parse_qs(url.query)
        if url.path == "/":
            self._send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")
        elif url.path == "/api/search":
            self._search(params)
        elif url.path == "/file":
            self._file(params)
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

    def _search(self, params: dict[str, list[str]]) -> None:
        text = params.get("q", [""])[0]
        try:
            k = int(params.get("k", ["12"])[0])
        except ValueError:
            return self._json(HTTPStatus.BAD_REQUEST, {"error": "k must be an integer"})
        if not 1 <= k <= MAX_SERVE_K:
            return self._json(HTTPStatus.BAD_REQUEST, {"error": f"k must be between 1 and {MAX_SERVE_K}"})
        try:
            with self.server.model_lock:
                results = search(self.server.index, self.server.model, text=text, k=k)
        except SearchError as error:
            return self._json(HTTPStatus.BAD_REQUEST, {"error": str(error)})
        self._json(HTTPStatus.OK, {"query": text, "results": results})

    def _file(self, params: dict[str, list[str]]) -> None:
        try:
            item_id = int(params.get("id", [""])[0])
        except ValueError:
            return self._json(HTTPStatus.BAD_REQUEST, {"error": "id must be an integer"})
        path = self.server.allowed_file(item_id)
        if path is None:
            return self._json(HTTPStatus.FORBIDDEN, {"error": "not an indexed image"})
        self._send(HTTPStatus.OK, path.read_bytes(), mimetypes.guess_type(path.name)[0] or "application/octet-stream")

    def _json(self, status: HTTPStatus, data: dict) -> None:
        self._send(status, json.dumps(data, ensure_ascii=False).encode(), "application/json; charset=utf-8")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)


def make_server(index_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, model_dir=None) -> SearchServer:
    from . import load_model

    index = SearchIndex.load(index_dir)
    model_dir = Path(model_dir or index.model)
    index.check_model(model_dir, None)
    server = SearchServer((host, port), index, load_model(model_dir))
    server.index_dir = Path(index_dir)
    return server
