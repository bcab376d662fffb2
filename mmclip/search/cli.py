"""``mmclip search index | query | serve``: argument parsing and printing only."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from . import MAX_K, SearchError, build_index, query
from .index import KINDS


def _index(args: argparse.Namespace) -> int:
    summary = build_index(
        args.model,
        images=args.images,
        texts=args.texts,
        output=args.output,
        truncate_dim=args.truncate_dim,
        kind=args.kind,
        batch_size=args.batch_size,
        progress=not args.quiet,
    )
    print(
        f"{args.output}: added {summary['added']}, {summary['total']} items in all "
        f"({summary['kind']}, {summary['dim']}-d); skipped {len(summary['skipped'])}"
    )
    for entry in summary["skipped"]:
        print(f"  skipped {entry['path']}: {entry['reason']}")
    return 0


def _query(args: argparse.Namespace) -> int:
    hits = query(
        args.index, text=args.text, image=args.image, k=args.k, truncate_dim=args.truncate_dim, model_dir=args.model
    )
    if args.json:
        print(json.dumps(hits, ensure_ascii=False, indent=1))
    for hit in hits if not args.json else ():
        print(f"{hit['rank']:3d}  {hit['score']:.4f}  {hit.get('path') or hit.get('text')}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .server import make_server

    server = make_server(args.index, args.host, args.port, args.model)
    host, port = server.server_address[:2]
    print(f"serving {args.index} on http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def run(args: argparse.Namespace) -> int:
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # which SIMD build it tried, at INFO
    try:
        return args.search_run(args)
    except SearchError as error:
        print(f"mmclip search: {error}", file=sys.stderr)
        return 2


def add_search_parser(commands) -> None:
    search = commands.add_parser("search", help="multilingual image/text search over an exported model")
    sub = search.add_subparsers(dest="search_command", required=True)

    index = sub.add_parser("index", help="embed images (and texts) into a new or existing index")
    index.add_argument("model", help="an mmclip export directory")
    index.add_argument("--images", action="append", default=[], metavar="DIR", help="folder of images (repeatable)")
    index.add_argument("--texts", metavar="FILE", help="texts to index, one per line")
    index.add_argument("--output", required=True, metavar="INDEX", help="index directory (created or added to)")
    index.add_argument("--truncate-dim", type=int, help="store this Matryoshka prefix (default: full width)")
    index.add_argument(
        "--kind", choices=KINDS, default="auto", help="faiss index: auto = exact up to 50k items, else HNSW"
    )
    index.add_argument("--batch-size", type=int, default=32)
    index.add_argument("--quiet", action="store_true", help="no progress bar")
    index.set_defaults(search_run=_index)

    query_parser = sub.add_parser("query", help="the nearest items to a text or an image")
    query_parser.add_argument("index")
    query_parser.add_argument("text", nargs="?", help="a query in any language")
    query_parser.add_argument("--image", metavar="PATH", help="query by image instead")
    query_parser.add_argument("--k", type=int, default=10, help=f"results (1..{MAX_K}, default 10)")
    query_parser.add_argument("--truncate-dim", type=int, help="must match the index's dimension")
    query_parser.add_argument("--model", help="the model directory (default: the one recorded in the index)")
    query_parser.add_argument("--json", action="store_true", help="print JSON")
    query_parser.set_defaults(search_run=_query)

    serve = sub.add_parser("serve", help="a web page with a search box and thumbnails")
    serve.add_argument("index")
    serve.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--model", help="the model directory (default: the one recorded in the index)")
    serve.set_defaults(search_run=_serve)
    search.set_defaults(run=run)
