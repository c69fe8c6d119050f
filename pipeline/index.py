"""Indexing stage: embeddings and payloads into a Qdrant collection.

In: items, their vectors and the model version that produced them. Out: a Qdrant
collection whose point ids are derived from the dataset name and the item key, so a
rerun upserts the same points and the count equals the corpus size.

Two stores share one small interface (``VectorStore``):

- ``EdgeStore`` (default, nothing to start): Qdrant Edge (``qdrant-edge-py``), an
  embedded Qdrant shard per collection on disk under the run directory.
- ``ClientStore``: ``qdrant-client`` against a Qdrant server (``qdrant.url``), or
  qdrant-client's local mode (``qdrant.backend: local``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from pipeline.config import QdrantConfig
from pipeline.data import Item
from pipeline.embed import progress_bar

logger = logging.getLogger(__name__)

# Namespace of the point ids: uuid5(POINT_NAMESPACE, "<dataset>:<item key>").
POINT_NAMESPACE = uuid.UUID("5f0d6c1e-3a53-4b8e-9d0c-6a1f2e4b7c90")


class CollectionError(RuntimeError):
    """A collection that cannot be used as requested."""


@dataclass(frozen=True)
class CollectionInfo:
    size: int
    distance: str
    points: int
    complete: bool = True


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    payload: dict


class VectorStore(Protocol):
    """The operations the pipeline needs from Qdrant."""

    def collection_info(self, name: str) -> CollectionInfo | None: ...
    def create_collection(self, name: str, size: int) -> None: ...
    def delete_collection(self, name: str) -> None: ...
    def upsert(self, name: str, ids: list[str], vectors: np.ndarray, payloads: list[dict]) -> None: ...
    def finish(self, name: str) -> None: ...
    def search(self, name: str, vectors: np.ndarray, limit: int) -> list[list[Hit]]: ...
    def close(self) -> None: ...


def point_id(dataset: str, key: str) -> str:
    return str(uuid.uuid5(POINT_NAMESPACE, f"{dataset}:{key}"))


class EdgeStore:
    """Embedded Qdrant Edge shards, one directory per collection under ``root``.

    Each collection directory contains ``shard/`` and ``collection.json`` (vector size,
    distance, and ``complete``, which is false while an upload is in progress).
    Shard count and replication apply to a Qdrant server only.
    """

    def __init__(self, root: str | Path, config: QdrantConfig):
        import qdrant_edge

        self._edge = qdrant_edge
        self.root = Path(root)
        self.config = config
        self._shards: dict[str, object] = {}

    def _dir(self, name: str) -> Path:
        return self.root / "collections" / name

    def _read_meta(self, name: str) -> dict | None:
        path = self._dir(name) / "collection.json"
        if not path.is_file():
            return None
        return json.loads(path.read_text())

    def _write_meta(self, name: str, meta: dict) -> None:
        path = self._dir(name) / "collection.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(meta))
        os.replace(temporary, path)

    def _shard(self, name: str):
        if name not in self._shards:
            self._shards[name] = self._edge.EdgeShard.load(str(self._dir(name) / "shard"))
        return self._shards[name]

    def collection_info(self, name: str) -> CollectionInfo | None:
        meta = self._read_meta(name)
        if meta is None:
            return None
        points = self._shard(name).count(self._edge.CountRequest(exact=True))
        return CollectionInfo(size=meta["size"], distance=meta["distance"], points=points, complete=meta["complete"])

    def create_collection(self, name: str, size: int) -> None:
        edge = self._edge
        config = self.config
        distance = {"cosine": edge.Distance.Cosine, "dot": edge.Distance.Dot, "euclid": edge.Distance.Euclid}[config.distance]
        quantization = None
        if config.quantization == "int8":
            quantization = edge.ScalarQuantizationConfig(type=edge.ScalarType.Int8, quantile=0.99)
        edge_config = edge.EdgeConfig(
            vectors=edge.EdgeVectorParams(size=size, distance=distance, on_disk=config.on_disk),
            hnsw_config=edge.HnswIndexConfig(m=config.hnsw_m, ef_construct=config.hnsw_ef_construct,
                                             full_scan_threshold=config.full_scan_threshold_kb),
            quantization_config=quantization,
        )
        directory = self._dir(name)
        directory.mkdir(parents=True, exist_ok=True)
        self._write_meta(name, {"size": size, "distance": config.distance, "complete": False})
        self._shards[name] = edge.EdgeShard.create(str(directory / "shard"), edge_config)

    def delete_collection(self, name: str) -> None:
        shard = self._shards.pop(name, None)
        if shard is not None:
            shard.close()
        shutil.rmtree(self._dir(name), ignore_errors=True)

    def upsert(self, name: str, ids: list[str], vectors: np.ndarray, payloads: list[dict]) -> None:
        edge = self._edge
        meta = self._read_meta(name)
        if meta["complete"]:
            meta["complete"] = False
            self._write_meta(name, meta)
        rows = vectors.tolist()
        points = [edge.Point(id=point, vector=row, payload=payload) for point, row, payload in zip(ids, rows, payloads)]
        self._shard(name).update(edge.UpdateOperation.upsert_points(points))

    def finish(self, name: str) -> None:
        """Flush to disk, build the HNSW index, then mark the collection complete."""
        shard = self._shard(name)
        shard.flush()
        shard.optimize()
        meta = self._read_meta(name)
        meta["complete"] = True
        self._write_meta(name, meta)

    def search(self, name: str, vectors: np.ndarray, limit: int) -> list[list[Hit]]:
        edge = self._edge
        params = edge.SearchParams(hnsw_ef=max(self.config.hnsw_ef, limit))
        requests = [
            edge.QueryRequest(limit=limit, query=edge.Query.Nearest(row), with_payload=True, params=params)
            for row in vectors.tolist()
        ]
        results = self._shard(name).query_batch(edge.QueryBatchRequest(requests))
        return [[Hit(id=str(point.id), score=point.score, payload=point.payload or {}) for point in points]
                for points in results]

    def close(self) -> None:
        for shard in self._shards.values():
            shard.close()
        self._shards.clear()


class ClientStore:
    """A Qdrant server through ``qdrant-client`` (or its local mode, for ``path``).

    NOTE: the tests run this class in qdrant-client's local mode only. The server
    branch (``url``, ``upload_parallel``, shards, replication) has not run against a
    real Qdrant server.
    """

    def __init__(self, config: QdrantConfig, path: str | Path | None = None):
        from qdrant_client import QdrantClient, models

        self.models = models
        self.config = config
        if config.url:
            self.client = QdrantClient(url=config.url, api_key=config.api_key(), timeout=config.timeout_s)
            self.is_server = True
        else:
            self.client = QdrantClient(path=str(path))
            self.is_server = False

    def _distance(self):
        models = self.models
        return {"cosine": models.Distance.COSINE, "dot": models.Distance.DOT, "euclid": models.Distance.EUCLID}[self.config.distance]

    def collection_info(self, name: str) -> CollectionInfo | None:
        if not self.client.collection_exists(name):
            return None
        info = self.client.get_collection(name)
        vectors = info.config.params.vectors
        distance = str(vectors.distance.value).lower()  # "Cosine" -> "cosine", as in QdrantConfig
        points = self.client.count(name, exact=True).count
        return CollectionInfo(size=vectors.size, distance=distance, points=points)

    def create_collection(self, name: str, size: int) -> None:
        models = self.models
        config = self.config
        quantization = None
        if config.quantization == "int8":
            quantization = models.ScalarQuantization(
                scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, quantile=0.99, always_ram=True))
        self.client.create_collection(
            name,
            vectors_config=models.VectorParams(size=size, distance=self._distance(), on_disk=config.on_disk),
            hnsw_config=models.HnswConfigDiff(m=config.hnsw_m, ef_construct=config.hnsw_ef_construct,
                                              full_scan_threshold=config.full_scan_threshold_kb),
            quantization_config=quantization,
            shard_number=config.shard_number,
            replication_factor=config.replication_factor,
        )

    def delete_collection(self, name: str) -> None:
        self.client.delete_collection(name)

    def upsert(self, name: str, ids: list[str], vectors: np.ndarray, payloads: list[dict]) -> None:
        if self.is_server:
            self.client.upload_collection(name, vectors=vectors, payload=payloads, ids=ids,
                                          batch_size=len(ids), parallel=self.config.upload_parallel, wait=True)
            return
        points = self.models.Batch(ids=ids, vectors=vectors.tolist(), payloads=payloads)
        self.client.upsert(name, points=points, wait=True)

    def finish(self, name: str) -> None:
        pass

    def search(self, name: str, vectors: np.ndarray, limit: int) -> list[list[Hit]]:
        models = self.models
        params = models.SearchParams(hnsw_ef=max(self.config.hnsw_ef, limit))
        requests = [models.QueryRequest(query=row, limit=limit, with_payload=True, params=params)
                    for row in vectors.tolist()]
        responses = self.client.query_batch_points(name, requests=requests)
        return [[Hit(id=str(point.id), score=point.score, payload=point.payload or {}) for point in response.points]
                for response in responses]

    def close(self) -> None:
        self.client.close()


def open_store(config: QdrantConfig, run_dir: str | Path) -> VectorStore:
    """Open the store that the config names: a server if ``qdrant.url`` is set, else an embedded one.

    The embedded store lives at ``qdrant.path`` or ``<run_dir>/qdrant``.
    """
    if config.url:
        logger.info("Using the Qdrant server at %s", config.url)
        return ClientStore(config)
    path = Path(config.path or Path(run_dir) / "qdrant")
    if config.backend == "local":
        logger.info("Using qdrant-client local mode in %s", path)
        return ClientStore(config, path=path)
    logger.info("Using embedded Qdrant Edge in %s", path)
    return EdgeStore(path, config)


@dataclass
class IndexReport:
    """Result of one indexing call: point count and upload speed (encoding excluded)."""

    collection: str
    points: int
    upload_seconds: float
    finish_seconds: float

    @property
    def points_per_second(self) -> float:
        return self.points / self.upload_seconds if self.upload_seconds > 0 else float("inf")

    def as_dict(self) -> dict:
        return {"collection": self.collection, "points": self.points, "upload_seconds": round(self.upload_seconds, 3),
                "index_build_seconds": round(self.finish_seconds, 3),
                "points_per_second": round(self.points_per_second, 1)}


def prepare_collection(store: VectorStore, name: str, size: int, distance: str, recreate: bool = False) -> None:
    """Create the collection if missing; stop if it exists with another vector size or distance.

    Raises:
        CollectionError: the existing collection's size or distance differs and
            ``recreate`` is false.
    """
    info = store.collection_info(name)
    if info is not None and recreate:
        logger.info("Recreating collection %s (%d points)", name, info.points)
        store.delete_collection(name)
        info = None
    if info is None:
        store.create_collection(name, size)
        logger.info("Created collection %s (size %d, %s distance)", name, size, distance)
        return
    if info.size != size or info.distance != distance:
        raise CollectionError(
            f"Collection {name!r} exists with vector size {info.size} and {info.distance} distance, but this "
            f"model produces size {size} with {distance} distance. Rerun with --recreate to drop and rebuild "
            "it, or choose another qdrant.collection."
        )


def index_items(store: VectorStore, collection: str, dataset: str, items: list[Item], vectors: np.ndarray,
                model_version: str, splits: dict[str, str], config: QdrantConfig, recreate: bool = False,
                show_progress: bool = True) -> IndexReport:
    """Upsert items with their vectors and payloads, then wait until the collection is complete.

    Args:
        store: the vector store.
        collection: collection name.
        dataset: dataset name, part of every point id.
        items: the corpus; ``vectors[i]`` belongs to ``items[i]``.
        vectors: float32 array of shape (len(items), dim).
        model_version: stored in each payload.
        splits: item key -> split name, stored in each payload.
        config: upload batch size and collection settings.
        recreate: drop an existing collection first.

    Returns:
        The collection's point count and the upload time, encoding excluded.
    """
    if len(items) != len(vectors):
        raise ValueError(f"{len(items)} items but {len(vectors)} vectors")
    prepare_collection(store, collection, vectors.shape[1], config.distance, recreate=recreate)

    batch_size = config.upload_batch_size
    started = time.perf_counter()
    with progress_bar(disable=not show_progress) as progress:
        task = progress.add_task(f"Uploading to {collection}", total=len(items))
        for start in range(0, len(items), batch_size):
            batch = items[start:start + batch_size]
            ids = [point_id(dataset, item.key) for item in batch]
            payloads = [
                {"key": item.key, "text": item.text, "group": item.group, "kind": item.kind,
                 "split": splits.get(item.key, "unknown"), "model_version": model_version}
                for item in batch
            ]
            store.upsert(collection, ids, vectors[start:start + batch_size], payloads)
            progress.advance(task, len(batch))
    upload_seconds = time.perf_counter() - started

    started = time.perf_counter()
    store.finish(collection)
    finish_seconds = time.perf_counter() - started

    info = store.collection_info(collection)
    report = IndexReport(collection=collection, points=info.points, upload_seconds=upload_seconds,
                         finish_seconds=finish_seconds)
    logger.info("Indexed %d points into %s: upload %.2f s (%.0f points/s, encoding excluded), index build %.2f s",
                report.points, collection, upload_seconds, report.points_per_second, finish_seconds)
    return report
