"""Benchmark: upload speed of the embedded stores on the whole WordNet corpus.

Run with ``make bench`` or ``python -m pipeline.bench [--local-points N]``.

Encoding is excluded on purpose: every item gets a seeded random unit vector of
MiniLM's size (384), so the numbers measure the upload path alone (payload
building, point conversion, the store's writes). Real payloads (text, group, kind,
split, model version) are sent. Qdrant Edge indexes all 283,657 WordNet texts;
qdrant-client's local mode, which writes point by point, gets the first
``--local-points`` items so the run stays short. HNSW build time is reported
separately from the upload.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.config import DataConfig, QdrantConfig
from pipeline.data import load_items
from pipeline.index import ClientStore, EdgeStore, index_items

logger = logging.getLogger(__name__)


def random_unit_vectors(count: int, size: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, size), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def measure(store, items, vectors, config: QdrantConfig) -> dict:
    report = index_items(store, "bench", "wordnet", items, vectors, "bench", {}, config, recreate=True)
    return report.as_dict()


def measure_encoding(texts: list[str]) -> float:
    """Measure the pretrained MiniLM's encoding speed on these texts, in texts per second."""
    from pipeline.config import PipelineConfig
    from pipeline.embed import embed_texts
    from pipeline.model import build_pretrained_model

    model = build_pretrained_model(PipelineConfig())
    started = time.perf_counter()
    embed_texts(model, texts, 64, description="Encoding sample")
    return len(texts) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--local-points", type=int, default=20000,
                        help="items uploaded to qdrant-client local mode (default: 20000)")
    parser.add_argument("--encode-sample", type=int, default=2000,
                        help="texts encoded to report MiniLM throughput (default: 2000; 0 skips)")
    parser.add_argument("--output", type=Path, default=Path("runs/bench/bench.json"), help="where to write the JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    items = load_items(DataConfig())
    vectors = random_unit_vectors(len(items), 384, seed=0)
    config = QdrantConfig()
    results = {"machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, "
                          f"{__import__('os').cpu_count()} cores", "items": len(items)}

    with tempfile.TemporaryDirectory() as directory:
        store = EdgeStore(Path(directory) / "edge", config)
        try:
            results["edge"] = measure(store, items, vectors, config)
        finally:
            store.close()

        count = min(args.local_points, len(items))
        store = ClientStore(QdrantConfig(backend="local"), path=Path(directory) / "local")
        try:
            results["local"] = measure(store, items[:count], vectors[:count], config)
        finally:
            store.close()

    if args.encode_sample:
        texts = [item.text for item in items[: args.encode_sample]]
        results["encoding_texts_per_second"] = round(measure_encoding(texts), 1)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
