"""Search index on CPU: exact (``IndexFlatIP``, the baseline) against HNSW and IVF as ``mmclip.search`` builds them.

For each collection size, random unit vectors (``--dim``, clustered around ``--clusters`` centres
so that neighbours exist, as with real embeddings) are indexed three ways with
:func:`mmclip.search.index.new_faiss_index`; ``--queries`` held-out vectors from the same
clusters are searched one at a time (as ``mmclip search query`` and the web page do). Reported:
build seconds, median query milliseconds, and recall@10 against the exact result. This is what
``EXACT_LIMIT`` (exact search up to 50,000 items) rests on.

    .venv/bin/python bench/search_index.py --output bench/results/search_index.json
    .venv/bin/python bench/search_index.py --sizes 10000 --queries 50          # quick look
"""

from __future__ import annotations

import argparse
import importlib.metadata
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from report import emit, processor  # bench/report.py: scripts here run with bench/ on sys.path

from mmclip.search.index import new_faiss_index


def vectors(rng: np.random.Generator, count: int, centres: np.ndarray) -> np.ndarray:
    x = centres[rng.integers(len(centres), size=count)] + 0.5 * rng.standard_normal((count, centres.shape[1]))
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def measure(kind: str, data: np.ndarray, queries: np.ndarray, exact_ids: np.ndarray | None, k: int) -> dict:
    start = time.perf_counter()
    index = new_faiss_index(data.shape[1], kind, data)
    index.add(data)
    build = time.perf_counter() - start
    times, found = [], []
    for query in queries:
        start = time.perf_counter()
        _, ids = index.search(query[None], k)
        times.append(time.perf_counter() - start)
        found.append(ids[0])
    found = np.stack(found)
    result = {"kind": kind, "build_s": round(build, 3), "query_ms_median": round(1000 * statistics.median(times), 3)}
    if exact_ids is not None:
        result["recall@10_vs_exact"] = round(
            float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, exact_ids)])), 4
        )
    return result, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,50000,200000", help="collection sizes, comma-separated")
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    import faiss

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((args.clusters, args.dim)).astype(np.float32)
    report = {
        "device": {
            "processor": processor(),
            "faiss": importlib.metadata.version("faiss-cpu"),
            "threads": faiss.omp_get_max_threads(),
        },
        "dim": args.dim,
        "results": [],
    }
    for size in map(int, args.sizes.split(",")):
        data, queries = vectors(rng, size, centres), vectors(rng, args.queries, centres)
        exact, exact_ids = measure("flat", data, queries, None, 10)
        rows = [exact]
        for kind in ("hnsw", "ivf"):
            rows.append(measure(kind, data, queries, exact_ids, 10)[0])
        for row in rows:
            print(f"{size:>8} {row}", file=sys.stderr)
        report["results"].append({"size": size, "indexes": rows})
    emit(report, args.output)


if __name__ == "__main__":
    main()
