"""Collapse experiment: the plain and the scaled batch-hard triplet loss, side by side.

Both variants train from the same initial weights (same seed, so the same head
initialisation), on the same P x K batches, with the collapse monitor checking every
``training.monitor.every_n_steps`` steps. Then the held-out test groups are indexed
in the embedded Qdrant with each model and recall@10 is measured.

Out, in ``<run_dir>/``: ``plain/`` and ``scaled/`` run directories,
``collapse_loss.png`` (both loss curves with the margin drawn), ``collapse_geometry.png``
(effective rank and mean pairwise distance over steps), ``collapse.json`` and
``collapse.md`` (the numbers).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytorch_lightning as pl  # noqa: E402

from pipeline.config import PipelineConfig, merge, parse_config  # noqa: E402
from pipeline.embed import apply_head, embed_texts  # noqa: E402
from pipeline.evaluate import build_query_set, evaluate_collection  # noqa: E402
from pipeline.index import index_items, open_store  # noqa: E402
from pipeline.model import SimilarityTrainer, build_pretrained_model, load_servable  # noqa: E402
from pipeline.run import prepare_split  # noqa: E402
from pipeline.train import train  # noqa: E402

logger = logging.getLogger(__name__)

VARIANTS = ("plain", "scaled")


def run_collapse_experiment(config: PipelineConfig, run_dir: Path | None = None) -> Path:
    """Train both loss variants and write the comparison; return the path of ``collapse.md``."""
    run_dir = Path(run_dir or config.run_dir())
    run_dir.mkdir(parents=True, exist_ok=True)
    split = prepare_split(config)
    cache_dir = str(run_dir / "cache")  # shared: the frozen encoder's embeddings are computed once

    results = {}
    for variant in VARIANTS:
        variant_config = parse_config(merge(config.model_dump(mode="json"), {"loss": {"variant": variant}}),
                                      f"{config.name} ({variant})")
        pl.seed_everything(config.seed, workers=True, verbose=False)
        model = SimilarityTrainer(variant_config, cache_dir=cache_dir)
        logger.info("Training the %s variant", variant)
        result = train(variant_config, split.train, split.validation, run_dir=run_dir / variant,
                       trainable_model=model)
        results[variant] = {
            "servable": result.servable_dir,
            "steps": read_step_losses(run_dir / variant / "logs"),
            "monitor": result.monitor or {"history": [], "alarms": [], "collapsed": False},
            "initial_validation_loss": result.initial_validation_loss,
            "history": result.history,
        }

    recall = held_out_recall(config, split, {variant: results[variant]["servable"] for variant in VARIANTS}, run_dir)
    summary = summarise(config, results, recall)
    (run_dir / "collapse.json").write_text(json.dumps(summary, indent=2))
    plot_losses(results, config.loss.margin, run_dir / "collapse_loss.png")
    plot_geometry(results, run_dir / "collapse_geometry.png")
    path = run_dir / "collapse.md"
    path.write_text(render_summary(config, summary))
    return path


def read_step_losses(log_dir: Path) -> list[tuple[int, float]]:
    """Return (step, train_loss) pairs from a run's CSV log."""
    rows = []
    with (log_dir / "metrics.csv").open() as handle:
        for row in csv.DictReader(handle):
            if row.get("train_loss"):
                rows.append((int(row["step"]), float(row["train_loss"])))
    return rows


def held_out_recall(config: PipelineConfig, split, servables: dict[str, Path], run_dir: Path) -> dict[str, float]:
    """Measure recall@10 on the test groups for the pretrained encoder and each variant."""
    corpus = split.test
    query_set = build_query_set(split.test, corpus, config.evaluation.query_kind)
    texts = [item.text for item in corpus]
    baseline = embed_texts(build_pretrained_model(config), texts, config.training.encode_batch_size,
                           description="Encoding test items")
    vectors = {"baseline": baseline}
    for variant, servable in servables.items():
        model = load_servable(servable)
        if config.model.trainable_encoder:
            vectors[variant] = embed_texts(model, texts, config.training.encode_batch_size)
        else:
            vectors[variant] = apply_head(model, baseline)

    position = {item.key: index for index, item in enumerate(corpus)}
    rows = [position[item.key] for item in query_set.queries]
    recall = {}
    store = open_store(config.qdrant, run_dir)
    try:
        for name, matrix in vectors.items():
            collection = f"{config.qdrant.collection}_{name}"
            index_items(store, collection, config.data.name, corpus, matrix, name, split.split_of(), config.qdrant,
                        recreate=True)
            metrics = evaluate_collection(store, collection, query_set, matrix[rows], matrix, [10],
                                          config.qdrant.distance, label=name)
            recall[name] = metrics["recall@10"]
    finally:
        store.close()
    return recall


def summarise(config: PipelineConfig, results: dict, recall: dict[str, float]) -> dict:
    summary = {"margin": config.loss.margin, "recall@10": recall, "variants": {}}
    for variant in VARIANTS:
        steps = results[variant]["steps"]
        monitor = results[variant]["monitor"]
        history = monitor["history"]
        last_losses = [loss for _, loss in steps[-5:]]
        summary["variants"][variant] = {
            "final_train_loss": sum(last_losses) / len(last_losses) if last_losses else math.nan,
            "final_loss_over_margin": (sum(last_losses) / len(last_losses) / config.loss.margin
                                       if last_losses else math.nan),
            "initial_validation_loss": results[variant]["initial_validation_loss"],
            "final_validation_loss": (results[variant]["history"][-1].get("validation_loss", math.nan)
                                      if results[variant]["history"] else math.nan),
            "min_effective_rank": min((row["effective_rank"] for row in history), default=math.nan),
            "initial_effective_rank": history[0]["effective_rank"] if history else math.nan,
            "initial_mean_distance": history[0]["mean_distance"] if history else math.nan,
            "final_effective_rank": history[-1]["effective_rank"] if history else math.nan,
            "final_mean_distance": history[-1]["mean_distance"] if history else math.nan,
            "collapse_alarm": monitor["collapsed"],
            "checks": len(history),
            "checks_with_alarm": len(monitor["alarms"]),
            "alarm_at_last_check": bool(history and monitor["alarms"]
                                        and monitor["alarms"][-1]["step"] == history[-1]["step"]),
            "first_alarm_step": monitor["alarms"][0]["step"] if monitor["alarms"] else None,
            "first_alarm_reasons": monitor["alarms"][0]["reasons"] if monitor["alarms"] else [],
            "monitor_history": history,
            "step_losses": steps,
        }
    return summary


def plot_losses(results: dict, margin: float, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(8, 4.5))
    for variant, color in zip(VARIANTS, ("tab:red", "tab:blue")):
        steps = results[variant]["steps"]
        axis.plot([step for step, _ in steps], [loss for _, loss in steps], color=color, label=f"{variant} loss")
    axis.axhline(margin, color="black", linestyle="--", label=f"margin = {margin}")
    axis.set_xlabel("training step")
    axis.set_ylabel("batch-hard triplet loss")
    axis.set_title("Plain vs scaled batch-hard triplet loss")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_geometry(results: dict, path: Path) -> None:
    figure, (rank_axis, distance_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for variant, color in zip(VARIANTS, ("tab:red", "tab:blue")):
        history = results[variant]["monitor"]["history"]
        steps = [row["step"] for row in history]
        rank_axis.plot(steps, [row["effective_rank"] for row in history], marker=".", color=color, label=variant)
        distance_axis.plot(steps, [row["mean_distance"] for row in history], marker=".", color=color, label=variant)
    rank_axis.set_yscale("log")
    rank_axis.set_xlabel("training step")
    rank_axis.set_ylabel("effective rank (RankMe, log scale)")
    distance_axis.set_xlabel("training step")
    distance_axis.set_ylabel("mean pairwise distance")
    for axis in (rank_axis, distance_axis):
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def render_summary(config: PipelineConfig, summary: dict) -> str:
    training = config.training
    lines = [
        "# Collapse experiment: plain vs scaled batch-hard triplet loss",
        "",
        f"Setting: {config.data.max_groups or 'all'} WordNet synsets, encoder {config.model.encoder} "
        f"(trainable: {config.model.trainable_encoder}), head {config.model.head}, "
        f"AdamW lr {training.learning_rate}, {training.epochs} epochs, batches of "
        f"{training.groups_per_batch} x {training.items_per_group}, margin {config.loss.margin}, "
        f"{config.loss.distance} distance, seed {config.seed}.",
        "",
        "| | plain | scaled |",
        "|---|---:|---:|",
    ]
    rows = [
        ("final train loss (mean of last 5 logged)", "final_train_loss"),
        ("final loss / margin", "final_loss_over_margin"),
        ("validation loss before training", "initial_validation_loss"),
        ("final validation loss", "final_validation_loss"),
        ("min effective rank", "min_effective_rank"),
        ("final effective rank", "final_effective_rank"),
        ("final mean pairwise distance", "final_mean_distance"),
        ("effective rank at step 0", "initial_effective_rank"),
        ("mean pairwise distance at step 0", "initial_mean_distance"),
        ("collapse alarm at any check", "collapse_alarm"),
        ("first alarm at step", "first_alarm_step"),
        ("checks with an alarm", "checks_with_alarm"),
        ("checks in all", "checks"),
        ("alarm at the last check", "alarm_at_last_check"),
    ]
    variants = summary["variants"]
    for label, key in rows:
        lines.append(f"| {label} | {_cell(variants['plain'][key])} | {_cell(variants['scaled'][key])} |")
    recall = summary["recall@10"]
    lines.append(f"| held-out recall@10 (baseline {recall['baseline']:.4f}) | {recall['plain']:.4f} | "
                 f"{recall['scaled']:.4f} |")
    for variant in VARIANTS:
        reasons = variants[variant]["first_alarm_reasons"]
        if reasons:
            lines += ["", f"First alarm for {variant}: {'; '.join(reasons)}."]
    lines += ["", "![loss curves](collapse_loss.png)", "", "![geometry](collapse_geometry.png)", ""]
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)
