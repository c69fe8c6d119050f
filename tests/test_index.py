"""Indexing into the real embedded Qdrant (Qdrant Edge and qdrant-client local mode) with real vectors."""

import numpy as np
import pytest

from pipeline.config import QdrantConfig
from pipeline.data import load_items, split_items
from pipeline.embed import embed_texts
from pipeline.evaluate import EvaluationError, build_query_set, evaluate_collection
from pipeline.index import ClientStore, CollectionError, EdgeStore, index_items, open_store, point_id
from pipeline.model import build_pretrained_model
from tests.conftest import small_config

CHAIR = "n.03001627"  # chair: "a seat for one person, with a support for the back"


@pytest.fixture(scope="module")
def corpus(wordnet_dir, tmp_path_factory):
    config = small_config(tmp_path_factory.mktemp("corpus"))
    items = load_items(config.data)
    split = split_items(items, config.data, config.seed)
    chair = [item for item in items if item.group == CHAIR]
    assert chair, "the chair synset is missing from WordNet"
    test_keys = {item.key for item in split.test}
    selected = split.test + [item for item in chair if item.key not in test_keys]
    model = build_pretrained_model(config)
    vectors = embed_texts(model, [item.text for item in selected], show_progress=False)
    return selected, vectors, model, split.split_of()


def _index(store, corpus, collection="items", recreate=False, vectors=None):
    items, default_vectors, _, splits = corpus
    return index_items(store, collection, "wordnet", items, default_vectors if vectors is None else vectors,
                       "pretrained:test", splits, QdrantConfig(upload_batch_size=100), recreate=recreate,
                       show_progress=False)


@pytest.fixture
def edge(tmp_path):
    store = EdgeStore(tmp_path, QdrantConfig())
    yield store
    store.close()


def test_upload_count_equals_corpus(edge, corpus):
    report = _index(edge, corpus)
    info = edge.collection_info("items")
    assert report.points == len(corpus[0])
    assert info.points == len(corpus[0])
    assert info.complete
    assert info.size == 384
    assert report.upload_seconds > 0


def test_rerun_is_idempotent(edge, corpus):
    _index(edge, corpus)
    _index(edge, corpus)
    assert edge.collection_info("items").points == len(corpus[0])


def test_reopened_store_keeps_points(tmp_path, corpus):
    store = EdgeStore(tmp_path, QdrantConfig())
    _index(store, corpus)
    store.close()
    reopened = EdgeStore(tmp_path, QdrantConfig())
    try:
        assert reopened.collection_info("items").points == len(corpus[0])
    finally:
        reopened.close()


def test_dimension_mismatch_names_both_and_flag(edge, corpus):
    _index(edge, corpus)
    smaller = np.ascontiguousarray(corpus[1][:, :128])
    with pytest.raises(CollectionError) as error:
        _index(edge, corpus, vectors=smaller)
    message = str(error.value)
    assert "384" in message
    assert "128" in message
    assert "--recreate" in message
    assert edge.collection_info("items").points == len(corpus[0]), "a failed upload must not touch existing points"


def test_recreate_replaces_collection(edge, corpus):
    _index(edge, corpus)
    smaller = np.ascontiguousarray(corpus[1][:, :128])
    _index(edge, corpus, vectors=smaller, recreate=True)
    info = edge.collection_info("items")
    assert info.size == 128
    assert info.points == len(corpus[0])


def test_search_finds_chair_for_paraphrase(edge, corpus):
    items, _, model, _ = corpus
    _index(edge, corpus)
    query = embed_texts(model, ["a piece of furniture you sit on"], show_progress=False)
    hits = edge.search("items", query, 5)[0]
    assert len(hits) == 5
    assert CHAIR in [hit.payload["group"] for hit in hits]
    assert hits[0].score >= hits[-1].score


def test_payload_fields(edge, corpus):
    items, vectors, _, _ = corpus
    _index(edge, corpus)
    hit = edge.search("items", vectors[:1], 1)[0][0]
    assert hit.id == point_id("wordnet", items[0].key)
    assert hit.payload["text"] == items[0].text
    assert hit.payload["group"] == items[0].group
    assert hit.payload["kind"] == items[0].kind
    assert hit.payload["split"] == "test"
    assert hit.payload["model_version"] == "pretrained:test"


def test_point_ids_are_deterministic():
    assert point_id("wordnet", "n.1.definition.0") == point_id("wordnet", "n.1.definition.0")
    assert point_id("wordnet", "n.1.definition.0") != point_id("other", "n.1.definition.0")


def test_interrupted_upload_is_not_evaluated(edge, corpus):
    items, vectors, _, _ = corpus
    _index(edge, corpus)
    edge.upsert("items", [point_id("wordnet", items[0].key)], vectors[:1], [{"key": items[0].key}])
    assert not edge.collection_info("items").complete
    query_set = build_query_set(items, items, "definition")
    with pytest.raises(EvaluationError, match="incomplete"):
        evaluate_collection(edge, "items", query_set, vectors[:1], vectors, [1], "cosine")


def test_qdrant_client_local_mode(tmp_path, corpus):
    items, vectors, _, splits = corpus
    config = QdrantConfig(backend="local", path=str(tmp_path / "local"))
    store = open_store(config, tmp_path)
    assert isinstance(store, ClientStore)
    try:
        few = (items[:150], vectors[:150], None, splits)
        for _ in range(2):
            _index(store, few)
        info = store.collection_info("items")
        assert info.points == 150
        assert info.distance == "cosine"
        hits = store.search("items", vectors[:1], 3)[0]
        assert hits[0].payload["key"] == items[0].key
    finally:
        store.close()
