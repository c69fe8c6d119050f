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


def plot_training_curves(history: list[dict], margin: float, path: Path) -> bool:
    """Plot train/validation loss per epoch and the monitor's effective rank; False if no history."""
    if not history:
        return False
    epochs = [row["epoch"] for row in history]
    figure, (loss_axis, rank_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (("train_loss", "train loss"), ("validation_loss", "validation loss")):
        values = [row.get(key, math.nan) for row in history]
        loss_axis.plot(epochs, values, marker="o", label=label)
    loss_axis.axhline(margin, color="grey", linestyle="--", label=f"margin = {margin}")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("loss")
    loss_axis.set_title("Triplet loss")
    loss_axis.legend()

    ranks = [row.get("monitor_effective_rank", math.nan) for row in history]
    rank_axis.plot(epochs, ranks, marker="o", color="tab:green")
    rank_axis.set_xlabel("epoch")
    rank_axis.set_ylabel("effective rank (RankMe)")
    rank_axis.set_title("Validation sample geometry")
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
