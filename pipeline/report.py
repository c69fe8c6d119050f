"""Run report: metrics.json, a Markdown summary and PNG figures.

In: the metrics of the baseline and the fine-tuned model, the training history and
the collapse monitor's history. Out: files in the run directory.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pipeline.evaluate import METRIC_DEFINITIONS, definition_key  # noqa: E402

MODELS = ("baseline", "fine_tuned")


def metric_order(ks: list[int]) -> list[str]:
    names = [f"recall@{k}" for k in ks] + [f"hit_rate@{k}" for k in ks] + ["mrr@10", "map@r"]
    return names + [f"ann_recall@{k}" for k in ks]


def build_metrics_document(models: dict[str, dict[str, float]], ks: list[int], setting: dict,
                           training: dict | None = None) -> dict:
    """Assemble metrics.json: every number is listed with the key of its definition."""
    names = metric_order(ks)
    table = []
    for name in names:
        row = {"metric": name, "definition": definition_key(name)}
        for model in MODELS:
            row[model] = models.get(model, {}).get(name)
        if row["baseline"] is not None and row["fine_tuned"] is not None:
            row["delta"] = row["fine_tuned"] - row["baseline"]
        table.append(row)
    return {
        "definitions": METRIC_DEFINITIONS,
        "setting": setting,
        "metrics": table,
        "models": models,
        "training": training or {},
    }


def write_json(path: Path, document: dict) -> None:
    temporary = path.with_suffix(".partial")
    temporary.write_text(json.dumps(document, indent=2, default=_json_default))
    temporary.replace(path)


def _json_default(value):
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"Cannot serialise {type(value).__name__}")


def markdown_table(document: dict) -> str:
    lines = ["| metric | baseline | fine-tuned | delta |", "|---|---:|---:|---:|"]
    for row in document["metrics"]:
        lines.append(f"| {row['metric']} | {_format(row['baseline'])} | {_format(row['fine_tuned'])} | "
                     f"{_format(row.get('delta'), signed=True)} |")
    return "\n".join(lines)


def _format(value, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def write_report(run_dir: Path, document: dict, figures: list[str]) -> Path:
    """Write report.md with the setting, the metrics table and links to the figures."""
    setting = document["setting"]
    lines = [f"# Run report: {setting.get('run_name', run_dir.name)}", ""]
    lines.append("## Setting")
    for key, value in setting.items():
        lines.append(f"- {key}: {value}")

    lines += ["", "## Retrieval on held-out groups", "", markdown_table(document), ""]
    lines.append("Definitions:")
    for key, text in document["definitions"].items():
        lines.append(f"- **{key}**: {text}")

    training = document.get("training") or {}
    initial = training.get("initial_validation_loss")
    if initial is not None and not math.isnan(initial):
        lines += ["", f"Validation loss before training: {initial:.4f}"]
    if training.get("history"):
        lines += ["", "## Training", "", "| epoch | train loss | validation loss | effective rank | mean distance |",
                  "|---:|---:|---:|---:|---:|"]
        for row in training["history"]:
            lines.append(
                f"| {row['epoch']} | {_format(row.get('train_loss'))} | {_format(row.get('validation_loss'))} | "
                f"{_format(row.get('monitor_effective_rank'))} | {_format(row.get('monitor_mean_distance'))} |")

    if training.get("collapse_alarms"):
        lines += ["", "Collapse alarms:"]
        for alarm in training["collapse_alarms"]:
            lines.append(f"- step {alarm['step']}: {'; '.join(alarm['reasons'])}")
    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"![{name}]({name})" for name in figures]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def plot_training_curves(steps: list[dict], training: dict, margin: float, path: Path) -> bool:
    """Plot the loss over training steps and the monitor's geometry; False if nothing was logged.

    Args:
        steps: rows of the CSV log (``step``, ``train_loss`` or ``validation_loss``).
        training: ``initial_validation_loss`` (drawn at step 0) and ``monitor_history``.
        margin: drawn as a dashed line, the value a collapsed plain loss sits at.
    """
    train_rows = [row for row in steps if "train_loss" in row]
    if not train_rows:
        return False
    validation = [(row["step"], row["validation_loss"]) for row in steps if "validation_loss" in row]
    initial = training.get("initial_validation_loss")
    if initial is not None and not math.isnan(initial):
        validation.insert(0, (0, initial))

    figure, (loss_axis, rank_axis) = plt.subplots(1, 2, figsize=(11, 4))
    loss_axis.plot([row["step"] for row in train_rows], [row["train_loss"] for row in train_rows],
                   label="train loss (logged steps)", alpha=0.7)
    if validation:
        loss_axis.plot(*zip(*validation), marker="o", label="validation loss")
    loss_axis.axhline(margin, color="grey", linestyle="--", label=f"margin = {margin}")
    loss_axis.set_xlabel("training step")
    loss_axis.set_ylabel("loss")
    loss_axis.set_title("Triplet loss")
    loss_axis.legend()

    monitor = training.get("monitor_history") or []
    rank_axis.plot([row["step"] for row in monitor], [row["effective_rank"] for row in monitor], marker="o",
                   color="tab:green", label="effective rank (RankMe)")
    rank_axis.set_xlabel("training step")
    rank_axis.set_ylabel("effective rank (RankMe)")
    distance_axis = rank_axis.twinx()
    distance_axis.plot([row["step"] for row in monitor], [row["mean_distance"] for row in monitor], marker=".",
                       color="tab:purple", label="mean pairwise distance")
    distance_axis.set_ylabel("mean pairwise distance")
    rank_axis.set_title("Collapse monitor on a validation sample")
    lines = rank_axis.get_lines() + distance_axis.get_lines()
    rank_axis.legend(lines, [line.get_label() for line in lines], loc="lower left", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def plot_recall_curve(models: dict[str, dict[str, float]], ks: list[int], path: Path) -> None:
    figure, axis = plt.subplots(figsize=(6, 4))
    for model in MODELS:
        if model in models:
            axis.plot(ks, [models[model][f"recall@{k}"] for k in ks], marker="o", label=model.replace("_", "-"))
    axis.set_xlabel("k")
    axis.set_ylabel("recall@k")
    axis.set_xticks(ks)
    axis.set_ylim(0, 1)
    axis.set_title("Held-out recall@k")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
