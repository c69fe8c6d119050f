"""Evaluation stage: retrieval metrics through Qdrant on held-out groups.

In: query items, the indexed corpus (its items and vectors) and a collection to
search. Each query's relevant items are the other items of its group; the query
itself is removed from its results. Out: the metrics below, plus ANN recall, the
overlap of Qdrant's results with exact nearest neighbours computed in torch, so an
index problem is not mistaken for a model problem.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.data import Item
from pipeline.embed import progress_bar
from pipeline.index import VectorStore

logger = logging.getLogger(__name__)

METRIC_DEFINITIONS = {
    "recall@k": "Mean over queries of |relevant items in the top k| / |relevant items|.",
    "hit_rate@k": "Share of queries with at least one relevant item in the top k "
                  "(what metric-learning papers call Recall@K).",
    "mrr@10": "Mean over queries of 1 / rank of the first relevant item, 0 when none is in the top 10.",
    "map@r": "Mean average precision at R (Musgrave et al. 2020, 'A Metric Learning Reality Check'): "
             "for a query with R relevant items, (1/R) * sum over ranks i <= R of precision@i at the ranks "
             "that hold a relevant item.",
    "ann_recall@k": "Mean over queries of |Qdrant's top k ∩ exact top k| / k, where the exact top k comes "
                    "from a brute-force search in torch over the same vectors (1.0 = the index lost nothing).",
}


class EvaluationError(ValueError):
    """No usable queries or an incomplete collection."""


def retrieval_metrics(rankings: list[list[str]], relevant: list[set[str]], ks: list[int]) -> dict[str, float]:
    """Compute recall@k, hit_rate@k, MRR@10 and MAP@R from ranked result keys.

    Args:
        rankings: for each query, the retrieved item keys, best first (the query
            itself already removed). Must hold at least max(ks), 10 and R entries
            when that many exist.
        relevant: for each query, the keys of its relevant items (non-empty).
        ks: cut-offs for recall@k and hit_rate@k.

    Returns:
        Mapping such as ``{"recall@1": 0.5, "hit_rate@1": 1.0, "mrr@10": ..., "map@r": ...}``.
    """
    if len(rankings) != len(relevant):
        raise ValueError(f"{len(rankings)} rankings but {len(relevant)} relevant sets")
    if not rankings:
        raise EvaluationError("No queries to evaluate")

    sums = defaultdict(float)
    for ranking, targets in zip(rankings, relevant):
        hits = [key in targets for key in ranking]
        for k in ks:
            found = sum(hits[:k])
            sums[f"recall@{k}"] += found / len(targets)
            sums[f"hit_rate@{k}"] += 1.0 if found else 0.0

        first = next((rank for rank, hit in enumerate(hits[:10], start=1) if hit), None)
        sums["mrr@10"] += 1.0 / first if first else 0.0

        r = len(targets)
        found_so_far = 0
        precision_sum = 0.0
        for rank, hit in enumerate(hits[:r], start=1):
            if hit:
                found_so_far += 1
                precision_sum += found_so_far / rank
        sums["map@r"] += precision_sum / r

    return {name: value / len(rankings) for name, value in sums.items()}


@dataclass
class QuerySet:
    """Queries with their relevant items, and the corpus they are searched in."""

    queries: list[Item]
    relevant: list[set[str]]
    corpus: list[Item]


def build_query_set(eval_items: list[Item], corpus: list[Item], query_kind: str | None) -> QuerySet:
    """Make every ``eval_items`` item of ``query_kind`` a query (all items when None).

    The relevant items of a query are the other corpus items of its group; a query
    whose group has no other item is skipped.

    Raises:
        EvaluationError: no query has a relevant item.
    """
    members = defaultdict(set)
    for item in corpus:
        members[item.group].add(item.key)

    queries, relevant = [], []
    for item in eval_items:
        if query_kind is not None and item.kind != query_kind:
            continue
        targets = members[item.group] - {item.key}
        if targets:
            queries.append(item)
            relevant.append(targets)

    if not queries:
        kinds = sorted({item.kind for item in eval_items})
        raise EvaluationError(
            f"No evaluation queries: no item of kind {query_kind!r} has another item in its group "
            f"(kinds present: {', '.join(kinds)}). Set evaluation.query_kind to one of them, or to null "
            "to use every item as a query."
        )
    return QuerySet(queries=queries, relevant=relevant, corpus=corpus)


def search_rankings(store: VectorStore, collection: str, query_vectors: np.ndarray, queries: list[Item],
                    limit: int, batch_size: int, description: str = "Searching") -> list[list[str]]:
    """Search Qdrant for each query and return the result keys without the query itself."""
    rankings = []
    with progress_bar() as progress:
        task = progress.add_task(description, total=len(queries))
        for start in range(0, len(queries), batch_size):
            batch = query_vectors[start:start + batch_size]
            for query, hits in zip(queries[start:start + batch_size], store.search(collection, batch, limit + 1)):
                keys = [hit.payload["key"] for hit in hits if hit.payload.get("key") != query.key]
                rankings.append(keys[:limit])
            progress.advance(task, len(batch))
    return rankings


def exact_rankings(query_vectors: np.ndarray, corpus_vectors: np.ndarray, queries: list[Item], corpus: list[Item],
                   limit: int, distance: str = "cosine", batch_size: int = 1024) -> list[list[str]]:
    """Brute-force nearest neighbours in torch, with the same scoring as the collection."""
    corpus_tensor = torch.from_numpy(corpus_vectors)
    query_tensor = torch.from_numpy(query_vectors)
    if distance == "cosine":
        corpus_tensor = torch.nn.functional.normalize(corpus_tensor, dim=1)
        query_tensor = torch.nn.functional.normalize(query_tensor, dim=1)
    keys = [item.key for item in corpus]

    rankings = []
    take = min(limit + 1, len(corpus))
    for start in range(0, len(queries), batch_size):
        chunk = query_tensor[start:start + batch_size]
        if distance == "euclid":
            scores = -torch.cdist(chunk, corpus_tensor)
        else:
            scores = chunk @ corpus_tensor.T
        top = scores.topk(take, dim=1).indices.tolist()
        for query, row in zip(queries[start:start + batch_size], top):
            ranked = [keys[index] for index in row if keys[index] != query.key]
            rankings.append(ranked[:limit])
    return rankings


def ann_recall(approximate: list[list[str]], exact: list[list[str]], k: int) -> float:
    """Mean overlap of the approximate and exact top k."""
    overlaps = []
    for found, truth in zip(approximate, exact):
        truth_k = set(truth[:k])
        if truth_k:
            overlaps.append(len(set(found[:k]) & truth_k) / len(truth_k))
    return float(np.mean(overlaps)) if overlaps else float("nan")


def evaluate_collection(store: VectorStore, collection: str, query_set: QuerySet, query_vectors: np.ndarray,
                        corpus_vectors: np.ndarray, ks: list[int], distance: str, batch_size: int = 256,
                        label: str = "") -> dict[str, float]:
    """Search every query in a collection and compute all metrics, ANN recall included.

    Raises:
        EvaluationError: the collection is missing or was left incomplete by an
            interrupted upload.
    """
    info = store.collection_info(collection)
    if info is None or not info.complete:
        state = "missing" if info is None else "incomplete (an upload was interrupted)"
        raise EvaluationError(f"Collection {collection!r} is {state}; index it again before evaluating.")

    max_relevant = max(len(targets) for targets in query_set.relevant)
    limit = max(max(ks), 10, max_relevant)
    rankings = search_rankings(store, collection, query_vectors, query_set.queries, limit, batch_size,
                               description=f"Searching {label or collection}")
    metrics = retrieval_metrics(rankings, query_set.relevant, ks)

    exact = exact_rankings(query_vectors, corpus_vectors, query_set.queries, query_set.corpus, limit, distance)
    for k in ks:
        metrics[f"ann_recall@{k}"] = ann_recall(rankings, exact, k)
    exact_metrics = retrieval_metrics(exact, query_set.relevant, ks)
    metrics[f"exact_recall@{max(ks)}"] = exact_metrics[f"recall@{max(ks)}"]
    return metrics


def definition_key(metric: str) -> str:
    """Map a metric name such as ``recall@5`` to its key in ``METRIC_DEFINITIONS``."""
    name, _, cutoff = metric.partition("@")
    if metric in METRIC_DEFINITIONS:
        return metric
    if name == "exact_recall":
        return "recall@k"
    return f"{name}@k" if cutoff else name
