"""A loopback HTTP server over a folder (the real transport for http:// and pipe:curl sources)."""

import functools
import http.server
import threading
from contextlib import contextmanager


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # one line per request would drown the test output
        pass


@contextmanager
def serve(directory):
    """``http://127.0.0.1:PORT`` serving ``directory`` until the block ends."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
