"""The main job and the stage commands built on the stage modules.

``run_main_job``: train -> index (baseline and fine-tuned) -> evaluate -> report.
``index_corpus``, ``evaluate_run`` and ``search`` back the ``pipeline index``,
``pipeline evaluate`` and ``pipeline search`` commands.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import PipelineConfig
from pipeline.data import Item, Split, load_items, split_items
from pipeline.embed import apply_head, embed_texts
from pipeline.evaluate import build_query_set, evaluate_collection
from pipeline.index import CollectionError, Hit, index_items, open_store
from pipeline.model import build_pretrained_model, load_servable
from pipeline.report import (build_metrics_document, markdown_table, plot_recall_curve, plot_training_curves,
                             write_json, write_report)
from pipeline.train import SERVABLE_DIR, SERVABLE_TRAINING, train

logger = logging.getLogger(__name__)

BASELINE_VERSION_PREFIX = "pretrained:"


def collection_name(config: PipelineConfig, fine_tuned: bool) -> str:
    return f"{config.qdrant.collection}_{'finetuned' if fine_tuned else 'baseline'}"


def prepare_split(config: PipelineConfig) -> Split:
    items = load_items(config.data)
    split = split_items(items, config.data, config.seed)
    logger.info("Data %s: %s", config.data.name, split.summary())
    return split


def corpus_items(split: Split, scope: str) -> list[Item]:
    """Return the items of an evaluation index: the test split, or every split as distractors."""
    return split.test if scope == "test" else split.all_items()


def model_version(run_dir: Path) -> str:
    path = run_dir / SERVABLE_DIR / "pipeline_version.json"
    if path.is_file():
        return json.loads(path.read_text())["version"]
    return f"{run_dir.name}"


@dataclass
class EncodedCorpus:
    items: list[Item]
    baseline: np.ndarray
    fine_tuned: np.ndarray | None = None


def encode_corpus(config: PipelineConfig, items: list[Item], fine_tuned_model=None) -> EncodedCorpus:
    """Encode the corpus with the pretrained encoder and, if given, the fine-tuned model.

    With a frozen encoder the fine-tuned vectors are the head applied to the
    pretrained vectors, so the texts are encoded once.
    """
    batch_size = config.training.encode_batch_size
    texts = [item.text for item in items]
    baseline = embed_texts(build_pretrained_model(config), texts, batch_size, description="Encoding (pretrained)")
    fine_tuned = None
    if fine_tuned_model is not None:
        if config.model.trainable_encoder:
            fine_tuned = embed_texts(fine_tuned_model, texts, batch_size, description="Encoding (fine-tuned)")
        else:
            fine_tuned = apply_head(fine_tuned_model, baseline)
    return EncodedCorpus(items=items, baseline=baseline, fine_tuned=fine_tuned)


def run_main_job(config: PipelineConfig, run_dir: Path | None = None, resume: bool = False,
                 recreate: bool = True) -> dict:
    """Train, index both models, evaluate on the held-out groups and write the report.

    Returns:
        The metrics document that was written to ``metrics.json``.
    """
    run_dir = Path(run_dir or config.run_dir())
    started = time.perf_counter()
    # An interrupted run must not leave an earlier run's report looking current.
    for name in ("metrics.json", "report.md", "training_curves.png", "recall_at_k.png"):
        (run_dir / name).unlink(missing_ok=True)
    split = prepare_split(config)
    # Fail on an unusable evaluation setting now, not after training.
    build_query_set(split.test, corpus_items(split, config.evaluation.index_scope), config.evaluation.query_kind)

    result = train(config, split.train, split.validation, run_dir=run_dir, resume=resume)
    document = evaluate_run(config, run_dir, split=split, training=result.training_record(), recreate=recreate)
    document["setting"]["total_seconds"] = round(time.perf_counter() - started, 1)
    write_json(run_dir / "metrics.json", document)
    return document


def evaluate_run(config: PipelineConfig, run_dir: Path, split: Split | None = None, training: dict | None = None,
                 recreate: bool = True) -> dict:
    """Index the held-out corpus with both models, evaluate them and write the report files."""
    run_dir = Path(run_dir)
    fine_tuned_model = load_servable(run_dir / SERVABLE_DIR)
    split = split or prepare_split(config)
    if training is None:
        record = run_dir / SERVABLE_DIR / SERVABLE_TRAINING
        training = json.loads(record.read_text()) if record.is_file() else {}
    steps = training.pop("steps", [])

    corpus = corpus_items(split, config.evaluation.index_scope)
    query_set = build_query_set(split.test, corpus, config.evaluation.query_kind)
    encoded = encode_corpus(config, corpus, fine_tuned_model)
    position = {item.key: index for index, item in enumerate(corpus)}
    query_rows = [position[item.key] for item in query_set.queries]

    splits = split.split_of()
    versions = {"baseline": BASELINE_VERSION_PREFIX + config.model.encoder, "fine_tuned": model_version(run_dir)}
    vectors = {"baseline": encoded.baseline, "fine_tuned": encoded.fine_tuned}
    models, indexing = {}, {}
    store = open_store(config.qdrant, run_dir)
    try:
        for name in ("baseline", "fine_tuned"):
            collection = collection_name(config, fine_tuned=name == "fine_tuned")
            report = index_items(store, collection, config.data.name, corpus, vectors[name], versions[name],
                                 splits, config.qdrant, recreate=recreate)
            indexing[name] = report.as_dict()
            models[name] = evaluate_collection(
                store, collection, query_set, vectors[name][query_rows], vectors[name],
                config.evaluation.k, config.qdrant.distance, config.evaluation.batch_size, label=name)
    finally:
        store.close()

    setting = {
        "run_name": config.name,
        "dataset": config.data.name,
        "index_scope": config.evaluation.index_scope,
        "index_holds": ("the test groups' items only" if config.evaluation.index_scope == "test"
                        else "every split's items (train and validation items are distractors)"),
        "queries": len(query_set.queries),
        "query_kind": config.evaluation.query_kind,
        "corpus_items": len(corpus),
        "groups": split.summary(),
        "encoder": config.model.encoder,
        "trainable_encoder": config.model.trainable_encoder,
        "head": config.model.head,
        "loss": config.loss.model_dump(),
        "epochs": config.training.epochs,
        "model_versions": versions,
        "indexing": indexing,
    }
    document = build_metrics_document(models, config.evaluation.k, setting, training)
    write_json(run_dir / "metrics.json", document)

    figures = []
    if plot_training_curves(steps, training, config.loss.margin, run_dir / "training_curves.png"):
        figures.append("training_curves.png")
    plot_recall_curve(models, config.evaluation.k, run_dir / "recall_at_k.png")
    figures.append("recall_at_k.png")
    write_report(run_dir, document, figures)
    logger.info("Wrote %s and %s", run_dir / "metrics.json", run_dir / "report.md")
    return document


def index_corpus(config: PipelineConfig, model_dir: Path | None, recreate: bool = False,
                 collection: str | None = None) -> dict:
    """Index the configured corpus with a trained run (``model_dir``) or the pretrained encoder."""
    split = prepare_split(config)
    corpus = corpus_items(split, config.evaluation.index_scope)
    texts = [item.text for item in corpus]
    if model_dir is not None:
        model = load_servable(Path(model_dir) / SERVABLE_DIR)
        version = model_version(Path(model_dir))
        run_dir = Path(model_dir)
    else:
        model = build_pretrained_model(config)
        version = BASELINE_VERSION_PREFIX + config.model.encoder
        run_dir = config.run_dir()
    name = collection or collection_name(config, fine_tuned=model_dir is not None)

    vectors = embed_texts(model, texts, config.training.encode_batch_size)
    store = open_store(config.qdrant, run_dir)
    try:
        report = index_items(store, name, config.data.name, corpus, vectors, version, split.split_of(),
                             config.qdrant, recreate=recreate)
    finally:
        store.close()
    return report.as_dict()


def search(config: PipelineConfig, query: str, k: int, model_dir: Path | None,
           collection: str | None = None) -> list[Hit]:
    """Embed one query with the same model as the collection and return its k nearest items."""
    if model_dir is not None:
        model = load_servable(Path(model_dir) / SERVABLE_DIR)
        run_dir = Path(model_dir)
    else:
        model = build_pretrained_model(config)
        run_dir = config.run_dir()
    name = collection or collection_name(config, fine_tuned=model_dir is not None)
    vector = embed_texts(model, [query], show_progress=False)

    store = open_store(config.qdrant, run_dir)
    try:
        info = store.collection_info(name)
        if info is None:
            raise FileNotFoundError(
                f"Collection {name!r} not found in {config.qdrant.url or run_dir / 'qdrant'}. "
                "Build it with 'pipeline index' or 'pipeline run' first.")
        if info.size != vector.shape[1]:
            raise CollectionError(
                f"Collection {name!r} contains vectors of size {info.size}, but the query model produces size "
                f"{vector.shape[1]}. Search with the model that built it (--model RUN_DIR, or no --model for "
                "the pretrained encoder).")
        return store.search(name, vector, k)[0]
    finally:
        store.close()


def print_table(document: dict) -> str:
    return markdown_table(document)
